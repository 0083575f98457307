//! The VFS entry points smbd calls (`ops`), the tevent requests behind them (`request`),
//! reads served from the page cache in smbd (`cached_read`), and the function table of each
//! VFS interface (`table`).

pub mod cached_read;
pub mod ops;
pub mod request;
pub mod table;
