//! The VFS entry points smbd calls (`ops`), the tevent requests behind them (`request`),
//! reads and writes served from the page cache in smbd (`cached_read`, `cached_write`), and
//! the function table of each VFS interface (`table`).

pub mod cached_read;
pub mod cached_write;
pub mod ops;
pub mod request;
pub mod table;
