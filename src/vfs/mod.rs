//! The VFS entry points smbd calls (`ops`), the tevent requests behind them (`request`)
//! and their entries in Samba's profile (`profiling`), smbd's own calls kept off a hung
//! device (`guarded`), and the function table of each VFS
//! interface (`table`).

pub mod guarded;
pub mod ops;
pub mod profiling;
pub mod request;
pub mod table;
