//! Why a module could not be modelled or rewritten.

/// Everything that can go wrong when reading or rewriting a module. Each message says what was
/// found and, where there is one, what to do instead.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The input has no bytes at all.
    #[error("the file is empty (0 bytes): expected a WebAssembly core module (.wasm)")]
    Empty,
    /// The input is WebAssembly text, not binary.
    #[error(
        "found WebAssembly text format (starts with `{start}`), expected a binary core module: \
         compile it first, e.g. with `wasm-tools parse` or `wat2wasm`"
    )]
    Text {
        /// The first characters of the input.
        start: String,
    },
    /// The input does not start with the wasm magic number.
    #[error("not a WebAssembly module: expected the bytes `\\0asm` at offset 0, found {found}")]
    NotWasm {
        /// A description of what the first bytes look like.
        found: String,
    },
    /// The input is a component (component model), not a core module.
    #[error(
        "found a WebAssembly component (layer {layer}), expected a core module: clonecloud runs \
         WASI preview 1 command modules (build with --target wasm32-wasip1)"
    )]
    Component {
        /// The layer field of the header.
        layer: u16,
    },
    /// The module ends before its sections do.
    #[error(
        "truncated module: {size} bytes, but the section at offset {offset} needs more ({message})"
    )]
    Truncated {
        /// Length of the input.
        size: usize,
        /// Where reading stopped.
        offset: usize,
        /// wasmparser's message.
        message: String,
    },
    /// The module is malformed or does not validate.
    #[error("invalid module at byte offset {offset:#x}: {message}")]
    Invalid {
        /// Where the problem was found.
        offset: usize,
        /// wasmparser's message.
        message: String,
    },
    /// The module uses a feature this model does not handle.
    #[error("unsupported module feature: {0}")]
    Unsupported(String),
    /// A function named as a migration point does not exist.
    #[error(
        "no function named `{name}` in the module: give a name from the `name` section, its \
         demangled form, or #INDEX (`clonecloud inspect` lists them)"
    )]
    UnknownFunction {
        /// The name that was asked for.
        name: String,
    },
    /// A function index is out of range or is an import.
    #[error("function #{index} cannot be a migration point: {reason}")]
    NotAPoint {
        /// The function's index in the module's function index space.
        index: u32,
        /// Why.
        reason: String,
    },
    /// The module already uses a name the rewriter reserves.
    #[error(
        "the module already uses the reserved {what} `{name}`: it was probably rewritten by \
         clonecloud before; give the original module"
    )]
    ReservedName {
        /// "export name" or "import module".
        what: &'static str,
        /// The colliding name.
        name: String,
    },
    /// The rewriter produced something that does not validate (a bug in clonecloud).
    #[error(
        "internal error: the rewritten module does not validate at offset {offset:#x}: {message}"
    )]
    RewriteInvalid {
        /// Where the validator stopped.
        offset: usize,
        /// The validator's message.
        message: String,
    },
    /// The module has no linear memory, so there is nothing for access tracking to watch.
    #[error(
        "the module has no linear memory: access tracking watches memory 0 and there is none; a \
         module without memory needs no tracking (run it as it is)"
    )]
    NoMemoryToTrack,
    /// Memory 0 is of a kind access tracking does not handle.
    #[error(
        "memory 0 {what}: access tracking handles 32-bit memories with 64 KiB pages only \
         (build the module for wasm32, without custom page sizes)"
    )]
    UntrackableMemory {
        /// What memory 0 is: "is 64-bit (memory64)", "has a custom page size of 1 byte", …
        what: String,
    },
    /// The module already exports a name the access-tracking pass adds.
    #[error(
        "the module already exports `{name}`: it was probably instrumented for access tracking \
         before; instrument the module that was not"
    )]
    AlreadyInstrumented {
        /// The colliding export name.
        name: String,
    },
    /// A function would have more locals than wasm allows once the pass adds its temporaries.
    #[error(
        "function #{function} has {locals} locals, and access tracking must add {added} more, \
         over the limit of {limit}: the module cannot be instrumented (split the function)"
    )]
    TooManyLocals {
        /// The function's index in the module's function index space.
        function: u32,
        /// Its parameters and locals.
        locals: u64,
        /// The temporaries the pass needs in it.
        added: u32,
        /// wasmparser's limit on a function's locals.
        limit: u32,
    },
    /// An instruction reaches memory 0 in a way the pass does not know how to mark.
    #[error(
        "function #{function} uses `{instruction}` on memory 0, which access tracking cannot \
         mark: the module cannot be instrumented (build it without that proposal)"
    )]
    UntrackableInstruction {
        /// The function's index in the module's function index space.
        function: u32,
        /// The instruction, as wasmparser names it.
        instruction: String,
    },
    /// The access-tracking pass produced something that does not validate (a bug in clonecloud).
    #[error(
        "internal error: the module instrumented for access tracking does not validate at offset \
         {offset:#x}: {message}"
    )]
    InstrumentInvalid {
        /// Where the validator stopped.
        offset: usize,
        /// The validator's message.
        message: String,
    },
}

impl ModelError {
    /// Turns a wasmparser error into `Truncated` or `Invalid`.
    pub(crate) fn from_parser(e: &wasmparser::BinaryReaderError, size: usize) -> Self {
        let message = e.message().to_string();
        if message.contains("unexpected end") {
            ModelError::Truncated {
                size,
                offset: e.offset(),
                message,
            }
        } else {
            ModelError::Invalid {
                offset: e.offset(),
                message,
            }
        }
    }
}
