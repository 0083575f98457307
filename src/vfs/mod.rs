//! The VFS entry points smbd calls (`ops`), the tevent requests behind them (`request`),
//! and the function table of each VFS interface (`table`).

pub mod ops;
pub mod request;
pub mod table;
