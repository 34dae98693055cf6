//! The module model of clonecloud: what a WASI core module *is*, and the rewriter that turns
//! chosen functions into CloneCloud migration points.
//!
//! This crate knows nothing of wasmtime, sockets or clocks. It parses a core module with
//! wasmparser into a [`Module`] (types, imports classified as WASI preview 1 or other, functions
//! with names from the `name` section, exports, globals, tables, memories, element segments, code
//! sizes) and its [`CallGraph`], and [`rewrite`]s it with wasm-encoder.
//!
//! ```
//! # fn main() -> Result<(), clonecloud_model::ModelError> {
//! let wasm = wat::parse_str(r#"(module
//!     (func $square (export "square") (param i32) (result i32)
//!         local.get 0 local.get 0 i32.mul))"#).unwrap();
//! let module = clonecloud_model::Module::parse(&wasm)?;
//! let square = module.resolve_points(&["square".to_string()])?;
//! let rewritten = clonecloud_model::rewrite(&module, &wasm, &square)?;
//! assert_eq!(rewritten.points[0].ordinal, 0);
//! assert_eq!(rewritten.migrate_imports[0].1, "migrate.t0");
//! # Ok(()) }
//! ```
//!
//! The rewrite scheme (see [`rewrite`] for the details): each migration point keeps its index and
//! its code, in front of which goes a check of the point's flag (a byte of an added memory): set,
//! the call goes to the import `clonecloud` / `migrate.t<type>` (one per type, the point's
//! ordinal as an extra last argument) unless the host asked for the code itself (an added
//! global); the points are the elements of an exported table. Every mutable global and every memory
//! are exported, and every function import gets an exported trampoline, so a host (the clone)
//! can read and write the state and proxy WASI calls.
//!
//! For a clone that runs one call of a multi-threaded module, [`instrument_accesses`] makes a
//! copy of a module that records, byte by byte, what its code reads and writes of memory 0 (two
//! added memories, exported as [`READS_EXPORT`] and [`WRITES_EXPORT`]), so the device can check
//! the call against what its other threads changed meanwhile and merge it byte by byte.

mod callgraph;
mod error;
mod instrument;
mod module;
mod names;
mod rewrite;
mod wasi;

pub use callgraph::{CallGraph, IndirectSite};
pub use error::ModelError;
pub use instrument::{READS_EXPORT, WRITES_EXPORT, instrument_accesses};
pub use module::{
    Element, Export, ExportKind, FuncType, Function, FunctionKind, Global, Import, ImportClass,
    ImportKind, Memory, Module, Table,
};
pub use names::demangle;
pub use rewrite::{
    BYPASS_EXPORT, FLAGS_EXPORT, IMPORT_MODULE, LOCALS_EXPORT, POINTS_SECTION, RESERVED_PREFIX,
    REWRITE_FINGERPRINT, RewriteConfig, RewriteLayout, Rewritten, RewrittenPoint, WAIT32_IMPORT,
    WAIT64_IMPORT, host_waits, rewrite, rewrite_layout, rewrite_with, rewritten_points, tag_export,
};
pub use wasi::{WASI_P1_FUNCTIONS, WASI_P1_MODULES, device_api};
