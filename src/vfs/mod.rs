//! The VFS entry points smbd calls (`ops`), the tevent requests behind them (`request`),
//! smbd's own calls kept off a hung device (`guarded`), and the function table of each VFS
//! interface (`table`).

pub mod guarded;
pub mod ops;
pub mod request;
pub mod table;
