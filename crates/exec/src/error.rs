//! Why a module could not be run.

use std::path::PathBuf;

/// Everything that stops a run before the guest's own outcome is known.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The module could not be modelled or rewritten.
    #[error(transparent)]
    Model(#[from] clonecloud_model::ModelError),
    /// The module imports something WASI preview 1 does not provide.
    #[error(
        "the module imports `{module}`.`{name}` ({kind}), which is not a WASI preview 1 \
         function (nor wasi-threads' `wasi`.`thread-spawn` and shared memory, nor the device \
         API's `clonecloud_device` camera, position and screen: docs/device-api.md): clonecloud \
         runs WASI preview 1 command modules, threaded or not, and provides nothing else"
    )]
    UnsupportedImport {
        /// Import module name.
        module: String,
        /// Import field name.
        name: String,
        /// What kind of item.
        kind: &'static str,
    },
    /// A preopened directory could not be opened.
    #[error("cannot preopen directory `{}`: {source}", host.display())]
    Preopen {
        /// The host path.
        host: PathBuf,
        /// Why.
        source: wasmtime::Error,
    },
    /// The engine could not be built with the requested configuration.
    #[error("cannot configure the wasm engine: {0}")]
    Engine(wasmtime::Error),
    /// wasmtime refused to compile the module.
    #[error("cannot compile the module: {0}")]
    Compile(wasmtime::Error),
    /// The command entry point is not a function of no params and no results.
    #[error(
        "the module's `{name}` export is not a function of type () -> (): cannot run it as a command"
    )]
    BadEntry {
        /// The export name.
        name: String,
    },
    /// A multi-threaded (wasi-threads) module that cannot be run, or cannot be run this way.
    #[error("{0}")]
    Threads(String),
    /// Linking or running failed for a reason that is neither a guest exit nor a trap.
    #[error("{0}")]
    Runtime(wasmtime::Error),
}
