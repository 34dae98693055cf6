//! The rewriter: turns chosen functions into CloneCloud migration points.
//!
//! For points `P = {f_0 < f_1 < … < f_{k-1}}` (original function indices; `j` is a point's
//! *ordinal*) of a module with `N` imported and `D` defined functions, whose points have `T`
//! distinct types, the new function index space is
//!
//! ```text
//! [ N imports | T imports clonecloud.migrate.t<type> | W waits | D defined | N import trampolines ]
//! ```
//!
//! (`W` is 2, `clonecloud.wait32` and `clonecloud.wait64`, when memory 0 is shared: see
//! [`host_waits`]; 0 otherwise) so an original index `f >= N` becomes `f + T + W`, and every
//! caller, table entry, export and the
//! start function keep reaching the same function. A point keeps its place and its code; a
//! check of its flag is put in front of its code:
//!
//! ```text
//! (func $f_j (type t) (local …)     ;; same type and locals as before
//!   i32.const j
//!   i32.load8_u $__cc_flags          ;; the point's flag: byte j of the flag memory
//!   if                               ;; (set: the host is asked, unless it asked for the body)
//!     global.get $__cc_bypass
//!     i32.const j+1
//!     i32.ne
//!     if
//!       local.get 0 … local.get n-1
//!       i32.const j
//!       call $clonecloud.migrate.t<t> ;; one import per type, the ordinal last: the host decides
//!       return                        ;; (offload, or call the body back)
//!     end
//!     i32.const 0
//!     global.set $__cc_bypass         ;; the body runs; calls it makes are points again
//!   end
//!   …the original code…)
//! ```
//!
//! A call through a clear flag costs one load and one branch, and no extra frame: the fast path
//! of a point is as cheap as a check can be, which matters in code where every accessor is a
//! call. A host that decides to run point `j` here calls element `j` of the table
//! [`LOCALS_EXPORT`] (the function itself) with the global [`BYPASS_EXPORT`] set to `j + 1`: the
//! check lets that one call through and clears the global, so recursive calls are points again.
//!
//! What a host needs per point is reached by the ordinal, so the module grows by a constant
//! number of imports and exports however many points it has (a launch resolves and links them
//! all): the migration imports take the point's parameters and then the ordinal (an `i32`); the
//! points are the elements of the exported funcref table [`LOCALS_EXPORT`] (element `j` is point
//! `j`); the flags are the bytes of the exported memory [`FLAGS_EXPORT`] (byte `j` is point
//! `j`'s, 0 or 1; a page per 65,536 points). The table, the memory and the global are added
//! after the module's own, so the indices of those do not change; so are the migration imports'
//! types (the point's type with an `i32` parameter added). The custom section [`POINTS_SECTION`]
//! lists the points (original indices, in ordinal order), for a host that has only the
//! rewritten module.
//!
//! Exports added (all under [`RESERVED_PREFIX`]): [`LOCALS_EXPORT`], [`FLAGS_EXPORT`] and
//! [`BYPASS_EXPORT`] (when there are points), `__cc_global.<g>` (every mutable global of the
//! module), `__cc_memory.<m>` (every memory of the module), `__cc_tag.<t>` (every exception tag,
//! so a host can tell which tag an exception escaping a point carries, and throw one of it) and
//! `__cc_import.<i>` (a trampoline that calls function import `i`, so a clone can proxy a WASI
//! call into the device's instance).
//! `.debug_*` and other offset-bearing custom sections are dropped; the `name` section is kept
//! and remapped.

use std::borrow::Cow;

use wasm_encoder::reencode::{Error as ReError, Reencode, utils};
use wasm_encoder::{
    CodeSection, ConstExpr, CustomSection, DataSection, ElementSection, Elements, EntityType,
    ExportSection, FunctionSection, GlobalSection, GlobalType, ImportSection, IndirectNameMap, MemorySection, MemoryType,
    NameMap, NameSection, SectionId, TableSection, TableType, TypeSection,
};
use wasmparser::{BinaryReader, Parser, Payload, Validator, WasmFeatures};

use crate::error::ModelError;
use crate::module::Module;

/// Every export name the rewriter adds starts with this prefix; a module that already exports
/// such a name is refused.
pub const RESERVED_PREFIX: &str = "__cc_";
/// The import module of the migration imports.
pub const IMPORT_MODULE: &str = "clonecloud";
/// The export name of the funcref table of the points: element `j` is point `j`.
pub const LOCALS_EXPORT: &str = "__cc_locals";
/// The export name of the memory of the points' flags: byte `j` is point `j`'s flag (0: a call
/// runs the point's code; 1: it calls the migration import).
pub const FLAGS_EXPORT: &str = "__cc_flags";
/// The import (module [`IMPORT_MODULE`]) a `memory.atomic.wait32` on a shared memory 0 becomes:
/// `(addr i32, expected i32, timeout_ns i64, offset i32) -> i32`, the address `addr + offset`
/// (both unsigned), the result the instruction's (0 woken, 1 not equal, 2 timed out; a negative
/// timeout waits for ever). See [`host_waits`].
pub const WAIT32_IMPORT: &str = "wait32";
/// The same for `memory.atomic.wait64`: `(addr i32, expected i64, timeout_ns i64, offset i32) -> i32`.
pub const WAIT64_IMPORT: &str = "wait64";
/// The export name of the mutable `i32` global that lets one call through a set flag: a host
/// that runs point `j` here sets it to `j + 1` and calls element `j` of [`LOCALS_EXPORT`]; the
/// point's check clears it.
pub const BYPASS_EXPORT: &str = "__cc_bypass";
/// The custom section that lists the points of a rewritten module: their original function
/// indices in ordinal order, as a wasm vector of `u32` (LEB128). See [`rewritten_points`].
pub const POINTS_SECTION: &str = "clonecloud.points";

/// One migration point in a rewritten module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewrittenPoint {
    /// The function's index in the original module.
    pub function: u32,
    /// Its type index (the same in both modules).
    pub type_index: u32,
    /// Its ordinal: its position among the points, in order of original index. The point's
    /// check passes it as the last argument of the migration import; the point is element
    /// `ordinal` of table [`LOCALS_EXPORT`] and its flag byte `ordinal` of memory
    /// [`FLAGS_EXPORT`].
    pub ordinal: u32,
    /// Its index in the rewritten module (the old one, shifted by the migration imports).
    pub index: u32,
    /// Function index of the point's migration import (the one for its type) in the rewritten
    /// module.
    pub import: u32,
}

/// Where the rewriter puts things for a given module and point set, without the new module's
/// bytes: what a host needs to drive a rewritten module it already has compiled (a cached one).
/// [`rewrite_layout`] computes it in time linear in the number of points, functions and globals;
/// [`rewrite_with`] returns the same values in its [`Rewritten`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewriteLayout {
    /// The migration points, in order of original index (ordinal order).
    pub points: Vec<RewrittenPoint>,
    /// The migration imports, in order (module [`IMPORT_MODULE`]): `(the points' type index,
    /// field name migrate.t<type>)`.
    pub migrate_imports: Vec<(u32, String)>,
    /// `(global index, export name)` of every mutable global.
    pub globals: Vec<(u32, String)>,
    /// `(memory index, export name)` of every memory.
    pub memories: Vec<(u32, String)>,
    /// `(function index of the import, export name)` of every import trampoline.
    pub trampolines: Vec<(u32, String)>,
}

/// Identifies this rewriter's output scheme: a cache that keys rewritten modules by their input
/// (the original module, the points and the [`RewriteConfig`]) rather than by their bytes must
/// fold it into its key. It is derived from the rewriter's and the module model's source at
/// compile time (and a format number), so any change to them makes it differ; the clone's
/// access instrumentation ([`crate::instrument_accesses`]) is in it too, for a clone that caches
/// instrumented modules by the module they are made from.
pub const REWRITE_FINGERPRINT: u64 = fnv1a(
    include_bytes!("rewrite.rs"),
    fnv1a(include_bytes!("module.rs"), fnv1a(include_bytes!("instrument.rs"), 1)),
);

const fn fnv1a(bytes: &[u8], seed: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    h
}

/// A rewritten module and where the rewriter put things.
#[derive(Debug, Clone)]
pub struct Rewritten {
    /// The new module; it validates.
    pub wasm: Vec<u8>,
    /// The migration points, in order of original index (ordinal order).
    pub points: Vec<RewrittenPoint>,
    /// The migration imports, in order: `(the points' type index, field name)`.
    pub migrate_imports: Vec<(u32, String)>,
    /// `(global index, export name)` of every mutable global.
    pub globals: Vec<(u32, String)>,
    /// `(memory index, export name)` of every memory.
    pub memories: Vec<(u32, String)>,
    /// `(function index of the import, export name)` of every import trampoline.
    pub trampolines: Vec<(u32, String)>,
}

/// Options of the rewrite.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RewriteConfig {
    /// The initial value of every flag: `false` (0) sends calls to the local body until the host
    /// sets a flag; `true` (1) sends every call to the host from the start, calls made by the
    /// start function included.
    pub flags_set: bool,
}

/// Rewrites `wasm` (which `module` models) so that each function in `points` is a migration
/// point, with every flag initially clear. See [`rewrite_with`].
pub fn rewrite(module: &Module, wasm: &[u8], points: &[u32]) -> Result<Rewritten, ModelError> {
    rewrite_with(module, wasm, points, &RewriteConfig::default())
}

/// Rewrites `wasm` (which `module` models) so that each function in `points` is a migration
/// point. `points` need not be sorted; each must pass [`Module::check_point`]. An empty set
/// still adds the state exports and trampolines. The output validates.
pub fn rewrite_with(
    module: &Module,
    wasm: &[u8],
    points: &[u32],
    config: &RewriteConfig,
) -> Result<Rewritten, ModelError> {
    let RewriteLayout {
        points: rewritten_points,
        migrate_imports,
        globals,
        memories,
        trampolines,
    } = rewrite_layout(module, points)?;
    let layout = Layout::of(module, rewritten_points.len() as u32, migrate_imports.len() as u32);
    let n = layout.n;
    let k = layout.k;
    let import_types: Vec<u32> = module.functions[..n as usize]
        .iter()
        .map(|f| f.type_index)
        .collect();
    let flags_data = config.flags_set && k > 0;

    let mut rw = Rw {
        module,
        layout,
        point_of_defined: {
            let mut v = vec![None; layout.d as usize];
            for (j, p) in rewritten_points.iter().enumerate() {
                v[(p.function - n) as usize] = Some(j as u32);
            }
            v
        },
        points: &rewritten_points,
        migrate_imports: &migrate_imports,
        import_types,
        param_counts: module.types.iter().map(|t| t.params.len() as u32).collect(),
        globals: &globals,
        memories: &memories,
        trampolines: &trampolines,
        flags_data,
        emitted: Emitted::default(),
        needs: Emitted {
            points_section: true,
            ty: k + layout.w > 0,
            import: k + layout.w > 0,
            function: k + n > 0,
            table: k > 0,
            memory: k > 0,
            global: k > 0,
            export: k > 0 || !globals.is_empty() || !memories.is_empty() || n > 0 || module.tags > 0,
            element: k > 0,
            code: k + n > 0,
            data: flags_data,
        },
    };
    let mut out = wasm_encoder::Module::new();
    rw.parse_core_module(&mut out, Parser::new(0), wasm)
        .map_err(|e| match e {
            ReError::ParseError(e) => ModelError::from_parser(&e, wasm.len()),
            other => ModelError::Unsupported(other.to_string()),
        })?;
    let out = out.finish();
    Validator::new_with_features(WasmFeatures::default())
        .validate_all(&out)
        .map_err(|e| ModelError::RewriteInvalid {
            offset: e.offset(),
            message: e.message().to_string(),
        })?;
    Ok(Rewritten {
        wasm: out,
        points: rewritten_points,
        migrate_imports,
        globals,
        memories,
        trampolines,
    })
}

/// Where [`rewrite_with`] puts things when it makes `points` migration points of `module`
/// (which need not be sorted; each must pass [`Module::check_point`]), without rewriting: the
/// same checks and the same names, in time linear in the module's functions and globals.
pub fn rewrite_layout(module: &Module, points: &[u32]) -> Result<RewriteLayout, ModelError> {
    let mut points = points.to_vec();
    points.sort_unstable();
    points.dedup();
    for &p in &points {
        module.check_point(p)?;
    }
    if let Some(e) = module
        .exports
        .iter()
        .find(|e| e.name.starts_with(RESERVED_PREFIX))
    {
        return Err(ModelError::ReservedName {
            what: "export name",
            name: e.name.clone(),
        });
    }
    if let Some(i) = module.imports.iter().find(|i| i.module == IMPORT_MODULE) {
        return Err(ModelError::ReservedName {
            what: "import module",
            name: format!("{}.{}", i.module, i.name),
        });
    }

    // One migration import per type the points have, in order of type index.
    let mut import_of_type: Vec<Option<u32>> = vec![None; module.types.len()];
    for &f in &points {
        import_of_type[module.functions[f as usize].type_index as usize] = Some(0);
    }
    let mut migrate_imports = Vec::new();
    for (t, slot) in import_of_type.iter_mut().enumerate() {
        if slot.is_some() {
            *slot = Some(migrate_imports.len() as u32);
            migrate_imports.push((t as u32, format!("migrate.t{t}")));
        }
    }
    let layout = Layout::of(module, points.len() as u32, migrate_imports.len() as u32);
    let rewritten_points: Vec<RewrittenPoint> = points
        .iter()
        .enumerate()
        .map(|(j, &f)| {
            let type_index = module.functions[f as usize].type_index;
            RewrittenPoint {
                function: f,
                type_index,
                ordinal: j as u32,
                index: layout.defined(f),
                import: layout.migrate_import(
                    import_of_type[type_index as usize].expect("every point's type has one"),
                ),
            }
        })
        .collect();
    let globals: Vec<(u32, String)> = module
        .globals
        .iter()
        .filter(|g| g.mutable)
        .map(|g| (g.index, format!("{RESERVED_PREFIX}global.{}", g.index)))
        .collect();
    let memories: Vec<(u32, String)> = module
        .memories
        .iter()
        .map(|m| (m.index, format!("{RESERVED_PREFIX}memory.{}", m.index)))
        .collect();
    let trampolines: Vec<(u32, String)> = (0..layout.n)
        .map(|i| (i, format!("{RESERVED_PREFIX}import.{i}")))
        .collect();
    Ok(RewriteLayout {
        points: rewritten_points,
        migrate_imports,
        globals,
        memories,
        trampolines,
    })
}

/// Whether the rewrite of `module` turns its waits into host calls: when its memory 0 is shared
/// (a wasi-threads module). A thread waiting in wasm is then a thread in a host call, which a
/// host that must stop every thread of a program at a safe point (to merge a migrated call)
/// can tell from one running wasm; every `memory.atomic.wait32/64` on memory 0 becomes a call to
/// [`WAIT32_IMPORT`] or [`WAIT64_IMPORT`], two imports after the migration imports.
pub fn host_waits(module: &Module) -> bool {
    module.memories.iter().any(|m| m.index == 0 && m.shared)
}

/// The export name the rewriter gives exception tag `t`.
pub fn tag_export(t: u32) -> String {
    format!("{RESERVED_PREFIX}tag.{t}")
}

/// The points of a module [`rewrite_with`] made, read from its [`POINTS_SECTION`]: their original
/// function indices, in ordinal order (sorted). `None` when `wasm` has no such section (it was
/// not made by this rewriter) or it is malformed. The rewriter puts the section before the
/// module's first other section, so this reads little more than the header.
pub fn rewritten_points(wasm: &[u8]) -> Option<Vec<u32>> {
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.ok()? {
            Payload::CustomSection(c) if c.name() == POINTS_SECTION => {
                let mut r = BinaryReader::new(c.data(), 0);
                let count = r.read_var_u32().ok()?;
                let mut points = Vec::with_capacity((count as usize).min(c.data().len()));
                for _ in 0..count {
                    points.push(r.read_var_u32().ok()?);
                }
                return r.eof().then_some(points);
            }
            // The section comes first: a module without it before its code has none.
            Payload::CodeSectionStart { .. } => return None,
            _ => {}
        }
    }
    None
}

/// Where things go in the new index spaces.
#[derive(Debug, Clone, Copy)]
struct Layout {
    /// Imported functions.
    n: u32,
    /// Migration imports (distinct types of the points).
    t: u32,
    /// Points.
    k: u32,
    /// Defined functions.
    d: u32,
    /// Wait imports: 2 (`wait32`, `wait64`) when memory 0 is shared, else 0.
    w: u32,
    /// Types in the original module.
    types: u32,
    /// Tables in the original module (imported and defined).
    tables: u32,
    /// Memories in the original module (imported and defined).
    memories: u32,
    /// Globals in the original module (imported and defined).
    globals: u32,
}

impl Layout {
    fn of(module: &Module, k: u32, t: u32) -> Layout {
        let n = module.imported_functions;
        Layout {
            n,
            t,
            k,
            d: module.functions.len() as u32 - n,
            w: if host_waits(module) { 2 } else { 0 },
            types: module.types.len() as u32,
            tables: module.tables.len() as u32,
            memories: module.memories.len() as u32,
            globals: module.globals.len() as u32,
        }
    }
    /// The new index of defined function `f` (an original index).
    fn defined(&self, f: u32) -> u32 {
        f + self.t + self.w
    }
    /// The `u`-th migration import.
    fn migrate_import(&self, u: u32) -> u32 {
        self.n + u
    }
    /// The type of the `u`-th migration import.
    fn migrate_type(&self, u: u32) -> u32 {
        self.types + u
    }
    fn trampoline(&self, i: u32) -> u32 {
        self.n + self.t + self.w + self.d + i
    }
    /// The wait import of `width` (0: 32 bits, 1: 64 bits).
    fn wait_import(&self, width: u32) -> u32 {
        self.n + self.t + width
    }
    /// Its type.
    fn wait_type(&self, width: u32) -> u32 {
        self.types + self.t + width
    }
    /// The table of the bodies.
    fn locals_table(&self) -> u32 {
        self.tables
    }
    /// The memory of the flags.
    fn flags_memory(&self) -> u32 {
        self.memories
    }
    /// The global that lets one call through a set flag.
    fn bypass_global(&self) -> u32 {
        self.globals
    }
    /// Wasm pages of the flag memory: a byte per point.
    fn flags_pages(&self) -> u64 {
        u64::from(self.k).div_ceil(65536).max(1)
    }
}

/// Which of the sections the rewriter adds to have been written (or must be).
#[derive(Debug, Default, Clone, Copy)]
struct Emitted {
    points_section: bool,
    ty: bool,
    import: bool,
    function: bool,
    table: bool,
    memory: bool,
    global: bool,
    export: bool,
    element: bool,
    code: bool,
    data: bool,
}

struct Rw<'a> {
    module: &'a Module,
    layout: Layout,
    /// Defined-function ordinal → point ordinal.
    point_of_defined: Vec<Option<u32>>,
    points: &'a [RewrittenPoint],
    migrate_imports: &'a [(u32, String)],
    import_types: Vec<u32>,
    /// Per type index: the number of parameters.
    param_counts: Vec<u32>,
    globals: &'a [(u32, String)],
    memories: &'a [(u32, String)],
    trampolines: &'a [(u32, String)],
    /// Whether the flag memory starts with every flag set (a data segment of ones).
    flags_data: bool,
    emitted: Emitted,
    needs: Emitted,
}

type ReResult<T = ()> = Result<T, ReError<std::convert::Infallible>>;

impl Rw<'_> {
    fn points_section(&mut self) -> CustomSection<'static> {
        let mut data = Vec::with_capacity(5 + 3 * self.points.len());
        leb128(&mut data, self.points.len() as u32);
        for p in self.points {
            leb128(&mut data, p.function);
        }
        self.emitted.points_section = true;
        CustomSection {
            name: POINTS_SECTION.into(),
            data: data.into(),
        }
    }

    fn append_types(&mut self, s: &mut TypeSection) -> ReResult {
        for (t, _) in self.migrate_imports {
            let ty = &self.module.types[*t as usize];
            let mut params = Vec::with_capacity(ty.params.len() + 1);
            for p in &ty.params {
                params.push(self.val_type(*p)?);
            }
            params.push(wasm_encoder::ValType::I32);
            let mut results = Vec::with_capacity(ty.results.len());
            for r in &ty.results {
                results.push(self.val_type(*r)?);
            }
            s.ty().function(params, results);
        }
        if self.layout.w > 0 {
            use wasm_encoder::ValType::{I32, I64};
            s.ty().function([I32, I32, I64, I32], [I32]);
            s.ty().function([I32, I64, I64, I32], [I32]);
        }
        self.emitted.ty = true;
        Ok(())
    }

    fn append_imports(&mut self, s: &mut ImportSection) {
        for (u, (_, name)) in self.migrate_imports.iter().enumerate() {
            s.import(
                IMPORT_MODULE,
                name,
                EntityType::Function(self.layout.migrate_type(u as u32)),
            );
        }
        for (width, name) in [WAIT32_IMPORT, WAIT64_IMPORT].into_iter().enumerate().take(self.layout.w as usize) {
            s.import(IMPORT_MODULE, name, EntityType::Function(self.layout.wait_type(width as u32)));
        }
        self.emitted.import = true;
    }

    fn append_functions(&mut self, s: &mut FunctionSection) {
        for &t in &self.import_types {
            s.function(t);
        }
        self.emitted.function = true;
    }

    fn append_tables(&mut self, s: &mut TableSection) {
        if self.layout.k > 0 {
            let k = u64::from(self.layout.k);
            s.table(TableType {
                element_type: wasm_encoder::RefType::FUNCREF,
                table64: false,
                minimum: k,
                maximum: Some(k),
                shared: false,
            });
        }
        self.emitted.table = true;
    }

    fn append_memories(&mut self, s: &mut MemorySection) {
        if self.layout.k > 0 {
            let pages = self.layout.flags_pages();
            s.memory(MemoryType {
                minimum: pages,
                maximum: Some(pages),
                memory64: false,
                shared: false,
                page_size_log2: None,
            });
        }
        self.emitted.memory = true;
    }

    fn append_globals(&mut self, s: &mut GlobalSection) {
        if self.layout.k > 0 {
            s.global(
                GlobalType {
                    val_type: wasm_encoder::ValType::I32,
                    mutable: true,
                    shared: false,
                },
                &ConstExpr::i32_const(0),
            );
        }
        self.emitted.global = true;
    }

    fn append_exports(&mut self, s: &mut ExportSection) {
        use wasm_encoder::ExportKind as K;
        if self.layout.k > 0 {
            s.export(LOCALS_EXPORT, K::Table, self.layout.locals_table());
            s.export(FLAGS_EXPORT, K::Memory, self.layout.flags_memory());
            s.export(BYPASS_EXPORT, K::Global, self.layout.bypass_global());
        }
        for (g, name) in self.globals {
            s.export(name, K::Global, *g);
        }
        for (m, name) in self.memories {
            s.export(name, K::Memory, *m);
        }
        for (i, name) in self.trampolines {
            s.export(name, K::Func, self.layout.trampoline(*i));
        }
        for t in 0..self.module.tags {
            s.export(&tag_export(t), K::Tag, t);
        }
        self.emitted.export = true;
    }

    fn append_elements(&mut self, s: &mut ElementSection) {
        if self.layout.k > 0 {
            let bodies: Vec<u32> = self.points.iter().map(|p| p.index).collect();
            s.active(
                Some(self.layout.locals_table()),
                &ConstExpr::i32_const(0),
                Elements::Functions(bodies.into()),
            );
        }
        self.emitted.element = true;
    }

    fn append_data(&mut self, s: &mut DataSection) {
        if self.flags_data {
            s.active(
                self.layout.flags_memory(),
                &ConstExpr::i32_const(0),
                std::iter::repeat_n(1u8, self.layout.k as usize),
            );
        }
        self.emitted.data = true;
    }

    fn append_code(&mut self, s: &mut CodeSection) -> ReResult {
        for i in 0..self.layout.n {
            let params = self.param_count(self.import_types[i as usize]);
            let mut f = wasm_encoder::Function::new([]);
            let mut sink = f.instructions();
            for l in 0..params {
                sink.local_get(l);
            }
            sink.call(i).end();
            s.function(&f);
        }
        self.emitted.code = true;
        Ok(())
    }

    /// Point `j`'s code: its locals, the check of its flag, then its original code.
    fn point_body(&mut self, j: u32, body: wasmparser::FunctionBody<'_>) -> ReResult<wasm_encoder::Function> {
        let p = &self.points[j as usize];
        let (params, import) = (self.param_count(p.type_index), p.import);
        let mut f = utils::new_function_with_parsed_locals(self, &body)?;
        let mut sink = f.instructions();
        sink.i32_const(j as i32)
            .i32_load8_u(wasm_encoder::MemArg {
                offset: 0,
                align: 0,
                memory_index: self.layout.flags_memory(),
            })
            .if_(wasm_encoder::BlockType::Empty)
            .global_get(self.layout.bypass_global())
            .i32_const(j.wrapping_add(1) as i32)
            .i32_ne()
            .if_(wasm_encoder::BlockType::Empty);
        for l in 0..params {
            sink.local_get(l);
        }
        sink.i32_const(j as i32)
            .call(import)
            .return_()
            .end()
            .i32_const(0)
            .global_set(self.layout.bypass_global())
            .end();
        self.copy_code(&mut f, &body)?;
        Ok(f)
    }

    /// Copies `body`'s code into `f`, remapped; with host waits, a `memory.atomic.wait32/64` on
    /// memory 0 becomes its memarg's offset and a call to the wait import.
    fn copy_code(&mut self, f: &mut wasm_encoder::Function, body: &wasmparser::FunctionBody<'_>) -> ReResult {
        let mut reader = body.get_operators_reader()?;
        while !reader.eof() {
            let op = reader.read()?;
            let wait = match &op {
                wasmparser::Operator::MemoryAtomicWait32 { memarg } if memarg.memory == 0 => Some((0, memarg.offset)),
                wasmparser::Operator::MemoryAtomicWait64 { memarg } if memarg.memory == 0 => Some((1, memarg.offset)),
                _ => None,
            };
            match wait {
                Some((width, offset)) if self.layout.w > 0 => {
                    // A 32-bit memory's offsets fit in 32 bits; the host reads them unsigned.
                    f.instruction(&wasm_encoder::Instruction::I32Const(offset as u32 as i32));
                    f.instruction(&wasm_encoder::Instruction::Call(self.layout.wait_import(width)));
                }
                _ => {
                    f.instruction(&self.instruction(op)?);
                }
            }
        }
        Ok(())
    }

    /// The new index of original function `f`.
    fn function(&self, f: u32) -> u32 {
        if f < self.layout.n { f } else { self.layout.defined(f) }
    }

    fn param_count(&self, type_index: u32) -> u32 {
        self.param_counts[type_index as usize]
    }
}

/// Appends `v` as unsigned LEB128.
fn leb128(out: &mut Vec<u8>, mut v: u32) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// The order in which sections must appear in a module.
fn rank(id: SectionId) -> u8 {
    match id {
        SectionId::Custom => 0,
        SectionId::Type => 1,
        SectionId::Import => 2,
        SectionId::Function => 3,
        SectionId::Table => 4,
        SectionId::Memory => 5,
        SectionId::Tag => 6,
        SectionId::Global => 7,
        SectionId::Export => 8,
        SectionId::Start => 9,
        SectionId::Element => 10,
        SectionId::DataCount => 11,
        SectionId::Code => 12,
        SectionId::Data => 13,
    }
}

/// Custom sections whose content refers to code offsets or object-file relocations, which the
/// rewrite invalidates (and a points section of the input's own, which would be taken for the
/// rewriter's).
fn drops_custom_section(name: &str) -> bool {
    name.starts_with(".debug_")
        || name.starts_with("reloc.")
        || name.starts_with("metadata.code.")
        || name == "linking"
        || name == "sourceMappingURL"
        || name == POINTS_SECTION
}

impl Reencode for Rw<'_> {
    type Error = std::convert::Infallible;

    fn function_index(&mut self, func: u32) -> ReResult<u32> {
        Ok(self.function(func))
    }

    fn data_count(&mut self, count: u32) -> ReResult<u32> {
        Ok(count + u32::from(self.flags_data))
    }

    fn parse_type_section(
        &mut self,
        types: &mut TypeSection,
        section: wasmparser::TypeSectionReader<'_>,
    ) -> ReResult {
        utils::parse_type_section(self, types, section)?;
        self.append_types(types)
    }

    fn parse_import_section(
        &mut self,
        imports: &mut ImportSection,
        section: wasmparser::ImportSectionReader<'_>,
    ) -> ReResult {
        utils::parse_import_section(self, imports, section)?;
        self.append_imports(imports);
        Ok(())
    }

    fn parse_function_section(
        &mut self,
        functions: &mut FunctionSection,
        section: wasmparser::FunctionSectionReader<'_>,
    ) -> ReResult {
        utils::parse_function_section(self, functions, section)?;
        self.append_functions(functions);
        Ok(())
    }

    fn parse_table_section(
        &mut self,
        tables: &mut TableSection,
        section: wasmparser::TableSectionReader<'_>,
    ) -> ReResult {
        utils::parse_table_section(self, tables, section)?;
        self.append_tables(tables);
        Ok(())
    }

    fn parse_memory_section(
        &mut self,
        memories: &mut MemorySection,
        section: wasmparser::MemorySectionReader<'_>,
    ) -> ReResult {
        utils::parse_memory_section(self, memories, section)?;
        self.append_memories(memories);
        Ok(())
    }

    fn parse_global_section(
        &mut self,
        globals: &mut GlobalSection,
        section: wasmparser::GlobalSectionReader<'_>,
    ) -> ReResult {
        utils::parse_global_section(self, globals, section)?;
        self.append_globals(globals);
        Ok(())
    }

    fn parse_export_section(
        &mut self,
        exports: &mut ExportSection,
        section: wasmparser::ExportSectionReader<'_>,
    ) -> ReResult {
        utils::parse_export_section(self, exports, section)?;
        self.append_exports(exports);
        Ok(())
    }

    fn parse_element_section(
        &mut self,
        elements: &mut ElementSection,
        section: wasmparser::ElementSectionReader<'_>,
    ) -> ReResult {
        utils::parse_element_section(self, elements, section)?;
        self.append_elements(elements);
        Ok(())
    }

    fn parse_data_section(
        &mut self,
        data: &mut DataSection,
        section: wasmparser::DataSectionReader<'_>,
    ) -> ReResult {
        utils::parse_data_section(self, data, section)?;
        self.append_data(data);
        Ok(())
    }

    fn parse_code_section(
        &mut self,
        code: &mut CodeSection,
        section: wasmparser::CodeSectionReader<'_>,
    ) -> ReResult {
        for (defined, body) in section.into_iter().enumerate() {
            let body = body?;
            match self.point_of_defined.get(defined).copied().flatten() {
                Some(j) => {
                    let f = self.point_body(j, body)?;
                    code.function(&f);
                }
                None if self.layout.w > 0 => {
                    let mut f = utils::new_function_with_parsed_locals(self, &body)?;
                    self.copy_code(&mut f, &body)?;
                    code.function(&f);
                }
                None => self.parse_function_body(code, body)?,
            }
        }
        self.append_code(code)
    }

    fn intersperse_section_hook(
        &mut self,
        module: &mut wasm_encoder::Module,
        _after: Option<SectionId>,
        before: Option<SectionId>,
    ) -> ReResult {
        // Called between sections: synthesise, in order, the sections the rewrite needs and the
        // module does not have (a module with no imports, no tables, no exports…). The points
        // section goes first.
        if self.needs.points_section && !self.emitted.points_section {
            let s = self.points_section();
            module.section(&s);
        }
        let due = |id: SectionId| before.is_none_or(|b| rank(b) > rank(id));
        if self.needs.ty && !self.emitted.ty && due(SectionId::Type) {
            let mut s = TypeSection::new();
            self.append_types(&mut s)?;
            module.section(&s);
        }
        if self.needs.import && !self.emitted.import && due(SectionId::Import) {
            let mut s = ImportSection::new();
            self.append_imports(&mut s);
            module.section(&s);
        }
        if self.needs.function && !self.emitted.function && due(SectionId::Function) {
            let mut s = FunctionSection::new();
            self.append_functions(&mut s);
            module.section(&s);
        }
        if self.needs.table && !self.emitted.table && due(SectionId::Table) {
            let mut s = TableSection::new();
            self.append_tables(&mut s);
            module.section(&s);
        }
        if self.needs.memory && !self.emitted.memory && due(SectionId::Memory) {
            let mut s = MemorySection::new();
            self.append_memories(&mut s);
            module.section(&s);
        }
        if self.needs.global && !self.emitted.global && due(SectionId::Global) {
            let mut s = GlobalSection::new();
            self.append_globals(&mut s);
            module.section(&s);
        }
        if self.needs.export && !self.emitted.export && due(SectionId::Export) {
            let mut s = ExportSection::new();
            self.append_exports(&mut s);
            module.section(&s);
        }
        if self.needs.element && !self.emitted.element && due(SectionId::Element) {
            let mut s = ElementSection::new();
            self.append_elements(&mut s);
            module.section(&s);
        }
        if self.needs.code && !self.emitted.code && due(SectionId::Code) {
            let mut s = CodeSection::new();
            self.append_code(&mut s)?;
            module.section(&s);
        }
        if self.needs.data && !self.emitted.data && due(SectionId::Data) {
            let mut s = DataSection::new();
            self.append_data(&mut s);
            module.section(&s);
        }
        Ok(())
    }

    fn parse_custom_section(
        &mut self,
        module: &mut wasm_encoder::Module,
        section: wasmparser::CustomSectionReader<'_>,
    ) -> ReResult {
        if drops_custom_section(section.name()) {
            return Ok(());
        }
        match section.as_known() {
            wasmparser::KnownCustom::Name(reader) => {
                // A malformed name section (the validator does not look at custom sections) is
                // dropped rather than failing the rewrite: names are only for people.
                if let Ok(names) = self.name_section(reader) {
                    module.section(&names);
                }
                Ok(())
            }
            _ => utils::parse_custom_section(self, module, section),
        }
    }
}

impl Rw<'_> {
    /// The `name` section of the new module: functions keep their names, local and label names
    /// follow them, and the added functions get names of their own.
    fn name_section(&mut self, reader: wasmparser::NameSectionReader<'_>) -> ReResult<NameSection> {
        let mut out = NameSection::new();
        for sub in reader {
            match sub? {
                wasmparser::Name::Function(map) => {
                    let mut names: Vec<(u32, Cow<'_, str>)> = Vec::new();
                    for naming in map {
                        let naming = naming?;
                        names.push((self.function(naming.index), naming.name.into()));
                    }
                    for (u, (_, name)) in self.migrate_imports.iter().enumerate() {
                        names.push((
                            self.layout.migrate_import(u as u32),
                            format!("{IMPORT_MODULE}.{name}").into(),
                        ));
                    }
                    for (i, name) in self.trampolines {
                        names.push((self.layout.trampoline(*i), name.as_str().into()));
                    }
                    names.sort_by_key(|(i, _)| *i);
                    let mut map = NameMap::new();
                    for (i, name) in &names {
                        map.append(*i, name);
                    }
                    out.functions(&map);
                }
                sub @ (wasmparser::Name::Local(_) | wasmparser::Name::Label(_)) => {
                    let (map, is_local) = match sub {
                        wasmparser::Name::Local(m) => (m, true),
                        wasmparser::Name::Label(m) => (m, false),
                        _ => unreachable!(),
                    };
                    let mut entries: Vec<(u32, NameMap)> = Vec::new();
                    for indirect in map {
                        let indirect = indirect?;
                        let index = self.function(indirect.index);
                        let inner = utils::name_map(indirect.names, Ok)?;
                        entries.push((index, inner));
                    }
                    entries.sort_by_key(|(i, _)| *i);
                    let mut map = IndirectNameMap::new();
                    for (i, inner) in &entries {
                        map.append(*i, inner);
                    }
                    if is_local {
                        out.locals(&map)
                    } else {
                        out.labels(&map)
                    }
                }
                other => utils::parse_custom_name_subsection(self, &mut out, other)?,
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::{leb128, rewritten_points};
    use crate::{Module, RewriteConfig, rewrite_layout, rewrite_with};

    #[test]
    fn the_layout_is_where_the_rewrite_puts_things() {
        let wasm = wat::parse_str(
            r#"(module
                (import "wasi_snapshot_preview1" "proc_exit" (func (param i32)))
                (memory 1)
                (global (mut i32) (i32.const 0))
                (global i64 (i64.const 1))
                (global (mut f64) (f64.const 0))
                (func $a (result i32) i32.const 1)
                (func $b (param i32) (result i32) local.get 0 call $a i32.add)
                (func $c (param i64 f32))
                (func $d (param i32) (result i32) local.get 0)
                (export "b" (func $b)))"#,
        )
        .unwrap();
        let module = Module::parse(&wasm).unwrap();
        // Unsorted, with a duplicate: the layout sorts and deduplicates as the rewrite does.
        for points in [vec![], vec![3, 1], vec![1, 2, 3, 2], vec![4, 2, 1]] {
            let layout = rewrite_layout(&module, &points).unwrap();
            for flags_set in [false, true] {
                let out = rewrite_with(&module, &wasm, &points, &RewriteConfig { flags_set }).unwrap();
                assert_eq!(layout.points, out.points);
                assert_eq!(layout.migrate_imports, out.migrate_imports);
                assert_eq!(layout.globals, out.globals);
                assert_eq!(layout.memories, out.memories);
                assert_eq!(layout.trampolines, out.trampolines);
                let functions: Vec<u32> = layout.points.iter().map(|p| p.function).collect();
                assert_eq!(rewritten_points(&out.wasm), Some(functions));
            }
        }
        // $b and $d share a type, hence a migration import.
        let layout = rewrite_layout(&module, &[4, 2, 1]).unwrap();
        assert_eq!(layout.migrate_imports.len(), 2);
        assert_eq!(layout.points[1].import, layout.points[2].import);
        assert_ne!(layout.points[0].import, layout.points[1].import);
        assert_eq!(
            layout.points.iter().map(|p| p.ordinal).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        // Imports: proc_exit, then the 2 migration imports; a point keeps its place.
        assert_eq!(
            layout.points.iter().map(|p| p.index).collect::<Vec<_>>(),
            [3, 4, 6]
        );
        assert!(
            rewrite_layout(&module, &[0]).is_err(),
            "an import is no point"
        );
        assert_eq!(rewritten_points(&wasm), None);
    }

    #[test]
    fn leb128_is_what_wasmparser_reads() {
        for v in [0, 1, 127, 128, 300, 16_383, 16_384, 1 << 21, u32::MAX] {
            let mut out = Vec::new();
            leb128(&mut out, v);
            assert_eq!(wasmparser::BinaryReader::new(&out, 0).read_var_u32().unwrap(), v);
        }
    }
}
