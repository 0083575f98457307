//! The VFS entry points smbd calls (`ops`), the tevent requests behind them (`request`),
//! reads and writes done in the page cache in smbd without blocking (`nowait`), and the
//! function table of each VFS interface (`table`).

pub mod nowait;
pub mod ops;
pub mod request;
pub mod table;
