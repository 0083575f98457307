//! The VFS entry points smbd calls (`ops`), the tevent requests behind them (`request`)
//! and their entries in Samba's profile (`profiling`), and the function table of each VFS
//! interface (`table`).

pub mod ops;
pub mod profiling;
pub mod request;
pub mod table;
