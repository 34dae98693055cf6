//! The clone's access-tracking pass: a module-to-module transform after which a run of the
//! module leaves, in two added memories, the bytes of memory 0 it read and the bytes it wrote.
//!
//! # What it is for
//!
//! A thread of a multi-threaded module (wasm32-wasip1-threads: one imported *shared* memory
//! `env.memory`, atomics) can have one function call migrated to a clone, which runs it
//! single-threaded. Meanwhile the device's other threads go on changing memory. To accept the
//! call's answer the device must know exactly which bytes the call read (were they changed
//! under it? then the call saw a state that never existed, and is run again) and which it
//! wrote (merged byte by byte, so a neighbour's writes to the same page survive). The clone can
//! afford instrumentation; [`instrument_accesses`] makes the module it runs.
//!
//! # What it does
//!
//! - Memory 0 (imported or defined, 32-bit, 64 KiB pages) is the one tracked; other memories
//!   (the rewriter's `__cc_flags`, say) are left alone.
//! - If memory 0 is an imported shared memory, the output imports it *unshared* with the same
//!   limits: the clone runs the module single-threaded on an ordinary memory, where atomic
//!   accesses still work and `memory.atomic.wait32/64` traps (no other thread could wake it).
//! - Two memories are appended to the memory index space (the module's own keep their indices),
//!   exported as [`READS_EXPORT`] and [`WRITES_EXPORT`]: the *maps*, unshared, 32-bit, with
//!   memory 0's declared minimum and maximum. Byte `a` of a map is 1 once the run read (wrote)
//!   byte `a` of memory 0; the pass never clears a byte, so the host zeroes the maps before the
//!   call it wants to watch.
//! - Every instruction that accesses memory 0 first marks the exact bytes it is about to access,
//!   inline, in the same function:
//!
//!   ```text
//!   ;; i32.store offset=8 (memory 0), [addr, value] on the stack, becomes
//!   local.set $v                               ;; temporaries appended to the function's locals
//!   local.tee $a
//!   i32.const 0x01010101
//!   i32.store offset=8 align=0 (memory $writes) ;; the mark: same address, same offset, 4 ones
//!   local.get $a
//!   local.get $v
//!   i32.store offset=8 (memory 0)              ;; the access itself, as before
//!   ```
//!
//!   A mark is one store of ones as wide as the access (`i32.store8` of 0x01, `i32.store16` of
//!   0x0101, `i32.store` of 0x01010101, `i64.store` of 0x0101010101010101, `v128.store` of 16
//!   ones), with the access's own memarg offset, so its effective address is the access's; a
//!   bulk operation is marked by one `memory.fill` of 1 over the same address and length.
//!   Loads of every width (sign- or zero-extending), atomic loads, `v128` loads (the bytes they
//!   read: 8 for `v128.load8x8_s`, 2 for `v128.load16_splat`, 4 for `v128.load32_zero`, the lane
//!   width for `v128.loadN_lane`) and `memory.atomic.wait32/64` (4/8 bytes) mark the reads map;
//!   stores, atomic stores, `v128.store`, `v128.storeN_lane`, `memory.fill` and `memory.init`
//!   mark the writes map; atomic read-modify-write and compare-exchange mark both; `memory.copy`
//!   marks the reads of its source and the writes of its destination, each when that side is
//!   memory 0. `memory.atomic.notify` accesses nothing and is not marked.
//! - `memory.grow` on memory 0 is followed by code that grows each map to memory 0's new size if
//!   it is smaller (the grow's result stays on the stack), so the maps are never smaller than
//!   memory 0 after the guest grows it. Should a map fail to grow where memory 0 did (the host
//!   refused the memory), the run traps (`unreachable`) at once rather than later at a mark.
//! - Values above the address on the stack are saved in temporaries appended to the function's
//!   locals (one per value type and position an instruction needs, shared by every instruction
//!   of the function: an `i32.store` needs two `i32`s, a compare-exchange of `i64`s an `i32` and
//!   two `i64`s, a bulk operation three `i32`s); a function with no access to memory 0 is copied
//!   byte for byte, and so is every instruction of the others but the marks put between them.
//!
//! Everything else is carried over unchanged: types, imports (but memory 0's sharing), function
//! indices (no function is added), tables, globals, the module's exports, the start function,
//! elements, data and every custom section (`name`, `clonecloud.points`, …, byte for byte; the
//! temporaries have no names). The pass reads the module once (linear in its size) and
//! validates its output before returning it.
//!
//! # Semantics
//!
//! The instrumented module computes what the original does and traps where it traps, provided
//! the maps are at least as large as memory 0: then a mark is in bounds whenever its access is.
//! An access out of bounds may trap at its mark instead, which is the same trap (out of bounds
//! memory access). A map's contents are never read by the module.
//!
//! # What it does not know
//!
//! - Accesses made by the host: a WASI function (or any import) that reads or writes guest
//!   memory does so from outside the module, and the pass sees no instruction of it. The host
//!   marks those itself, in the same maps.
//! - Growth made by the host: a host that grows memory 0 itself (or instantiates it larger than
//!   its declared minimum) grows the maps to at least its size too; the pass sees only the
//!   `memory.grow` instructions of the module.
//! - Instantiation: active data segments are written into memory 0 before any code runs, and are
//!   not marked (nor are the effects of the start function distinguished from those of a later
//!   call: the host zeroes the maps before the call it tracks).
//! - Memories other than memory 0, tables and globals: the maps are of memory 0's bytes only.
//! - A module the rewriter made from a wasi-threads module calls the imports
//!   `clonecloud.wait32/64` where the original waited on memory 0: host functions too, whose
//!   reads are the host's to mark.

use wasm_encoder::reencode::{Error as ReError, Reencode, utils};
use wasm_encoder::{
    CodeSection, EntityType, ExportKind, ExportSection, ImportSection, InstructionSink, MemArg,
    MemorySection, MemoryType, Module as Encoded, RawSection, ValType,
};
use wasmparser::{FunctionBody, Operator, Parser, Payload, TypeRef, Validator, WasmFeatures};

use crate::error::ModelError;
use crate::module::Module;

/// Export name of the reads map: byte `a` is 1 once the run read byte `a` of memory 0.
pub const READS_EXPORT: &str = "__cc_reads";
/// Export name of the writes map: byte `a` is 1 once the run wrote byte `a` of memory 0.
pub const WRITES_EXPORT: &str = "__cc_writes";

/// wasmparser's limit on a function's parameters and locals together.
const MAX_LOCALS: u32 = 50_000;

/// Instruments `wasm`, any valid core module (usually one [`crate::rewrite_with`] made, which
/// may have memories besides memory 0), so that a run records, byte by byte, what its code reads
/// and writes of memory 0 in two added memories (the *maps*), exported as [`READS_EXPORT`] and
/// [`WRITES_EXPORT`]: byte `a` of a map is 1 once the code read (wrote) byte `a`. Every access
/// of memory 0 marks the exact bytes it accesses just before it; other memories are not
/// tracked; an imported shared memory 0 is imported unshared (the clone runs the call
/// single-threaded: atomics work, `memory.atomic.wait32/64` traps). Nothing else changes: no
/// index of the module's functions, memories, tables or globals, no custom section.
///
/// The host's part: it zeroes the maps before the call it tracks (the pass never clears them);
/// it keeps them at least as large as memory 0 when it grows memory 0 itself or gives a larger
/// one at instantiation (the module's own `memory.grow` grows them, and the instrumented module
/// behaves exactly like the original as long as they are); and it marks the bytes its own host
/// functions (WASI) read and write, which the pass cannot see.
///
/// Refused: a module that does not validate, one without a memory, one whose memory 0 is 64-bit
/// or has a custom page size, one that already exports either name, and (should one exist) a
/// function whose locals the temporaries would take over wasm's limit. Linear in the module's
/// size; the output validates.
pub fn instrument_accesses(wasm: &[u8]) -> Result<Vec<u8>, ModelError> {
    let module = Module::parse_without_call_graph(wasm)?;
    let memory = module.memories.first().ok_or(ModelError::NoMemoryToTrack)?;
    if memory.memory64 {
        return Err(ModelError::UntrackableMemory {
            what: "is 64-bit (memory64)".into(),
        });
    }
    if memory.page_size != 65536 {
        return Err(ModelError::UntrackableMemory {
            what: format!(
                "has a custom page size of {} byte{}",
                memory.page_size,
                if memory.page_size == 1 { "" } else { "s" }
            ),
        });
    }
    if let Some(e) = module
        .exports
        .iter()
        .find(|e| e.name == READS_EXPORT || e.name == WRITES_EXPORT)
    {
        return Err(ModelError::AlreadyInstrumented {
            name: e.name.clone(),
        });
    }
    let memories = module.memories.len() as u32;
    let pass = Pass {
        wasm,
        unshare: memory.imported && memory.shared,
        map_type: MemoryType {
            minimum: memory.initial,
            maximum: memory.maximum,
            memory64: false,
            shared: false,
            page_size_log2: None,
        },
        reads: memories,
        writes: memories + 1,
        memory64: module.memories.iter().map(|m| m.memory64).collect(),
        params: module
            .defined_functions()
            .map(|f| module.types[f.type_index as usize].params.len() as u32)
            .collect(),
        imported_functions: module.imported_functions,
    };
    let out = pass.run().map_err(|e| match e {
        ReError::ParseError(e) => ModelError::from_parser(&e, wasm.len()),
        ReError::UserError(e) => e,
        other => ModelError::Unsupported(other.to_string()),
    })?;
    Validator::new_with_features(WasmFeatures::default())
        .validate_all(&out)
        .map_err(|e| ModelError::InstrumentInvalid {
            offset: e.offset(),
            message: e.message().to_string(),
        })?;
    Ok(out)
}

type PassResult<T = ()> = Result<T, ReError<ModelError>>;

/// The pass over one module.
struct Pass<'a> {
    wasm: &'a [u8],
    /// Whether memory 0 is an imported shared memory, to be imported unshared.
    unshare: bool,
    /// The type of both maps.
    map_type: MemoryType,
    /// Memory index of the reads map.
    reads: u32,
    /// Memory index of the writes map.
    writes: u32,
    /// Per memory of the module: whether it is 64-bit (the operand types of `memory.copy`
    /// between memory 0 and another memory).
    memory64: Vec<bool>,
    /// Per defined function: its number of parameters (its first local's index).
    params: Vec<u32>,
    imported_functions: u32,
}

/// wasm-encoder's conversions of types, as they are: nothing is renumbered.
struct Same;

impl Reencode for Same {
    type Error = ModelError;
}

/// Section ids in the order sections must appear (the tag section, id 13, goes between the
/// memories and the globals; the data count, 12, before the code).
fn order(id: u8) -> u8 {
    match id {
        13 => 6,
        12 => 11,
        6..=9 => id + 1,
        10 => 12,
        11 => 13,
        other => other,
    }
}

const MEMORY_SECTION: u8 = 5;
const EXPORT_SECTION: u8 = 7;

impl Pass<'_> {
    /// The instrumented module, unvalidated.
    fn run(&self) -> PassResult<Vec<u8>> {
        let wasm = self.wasm;
        let mut out = Encoded::new();
        // The memory and export sections the module lacks, written before the first section
        // that must follow them.
        let (mut memory_due, mut export_due) = (true, true);
        let mut code: Option<(CodeSection, u32)> = None;
        let mut defined = 0u32;
        for payload in Parser::new(0).parse_all(wasm) {
            let payload = payload?;
            if let Some((id, _)) = payload.as_section()
                && id != 0
            {
                if memory_due && order(id) > order(MEMORY_SECTION) {
                    out.section(&self.memory_section(None)?);
                    memory_due = false;
                }
                if export_due && order(id) > order(EXPORT_SECTION) {
                    out.section(&self.export_section(None)?);
                    export_due = false;
                }
            }
            match payload {
                Payload::Version { .. } => {}
                Payload::ImportSection(reader) if self.unshare => {
                    out.section(&self.import_section(reader)?);
                }
                Payload::MemorySection(reader) => {
                    out.section(&self.memory_section(Some(reader))?);
                    memory_due = false;
                }
                Payload::ExportSection(reader) => {
                    out.section(&self.export_section(Some(reader))?);
                    export_due = false;
                }
                Payload::CodeSectionStart { count, .. } => {
                    if count == 0 {
                        out.section(&CodeSection::new());
                    } else {
                        code = Some((CodeSection::new(), count));
                    }
                }
                Payload::CodeSectionEntry(body) => {
                    let (section, left) =
                        code.as_mut().expect("entries follow their section's start");
                    self.function(section, defined, body)?;
                    defined += 1;
                    *left -= 1;
                    if *left == 0 {
                        out.section(&code.take().expect("just used").0);
                    }
                }
                Payload::End(_) => {
                    if memory_due {
                        out.section(&self.memory_section(None)?);
                    }
                    if export_due {
                        out.section(&self.export_section(None)?);
                    }
                }
                other => match other.as_section() {
                    // Everything else, custom sections included, byte for byte.
                    Some((id, range)) => {
                        out.section(&RawSection {
                            id,
                            data: &wasm[range],
                        });
                    }
                    None => {
                        return Err(ReError::UserError(ModelError::Unsupported(
                            "a payload that is not a core module section".into(),
                        )));
                    }
                },
            }
        }
        Ok(out.finish())
    }

    /// The import section with memory 0, an imported shared memory, imported unshared (compact
    /// import groups are written out one import at a time: the same imports in the same order).
    fn import_section(
        &self,
        reader: wasmparser::ImportSectionReader<'_>,
    ) -> PassResult<ImportSection> {
        let mut s = ImportSection::new();
        let mut first_memory = true;
        for import in reader.into_imports() {
            let import = import?;
            let ty = match import.ty {
                TypeRef::Memory(m) if first_memory => {
                    first_memory = false;
                    EntityType::Memory(MemoryType {
                        shared: false,
                        ..Same.memory_type(m)?
                    })
                }
                other => Same.entity_type(other)?,
            };
            s.import(import.module, import.name, ty);
        }
        Ok(s)
    }

    /// The module's memories (if it defines any), then the two maps.
    fn memory_section(
        &self,
        reader: Option<wasmparser::MemorySectionReader<'_>>,
    ) -> PassResult<MemorySection> {
        let mut s = MemorySection::new();
        if let Some(reader) = reader {
            utils::parse_memory_section(&mut Same, &mut s, reader)?;
        }
        s.memory(self.map_type).memory(self.map_type);
        Ok(s)
    }

    /// The module's exports (if it has any), then the two maps'.
    fn export_section(
        &self,
        reader: Option<wasmparser::ExportSectionReader<'_>>,
    ) -> PassResult<ExportSection> {
        let mut s = ExportSection::new();
        if let Some(reader) = reader {
            utils::parse_export_section(&mut Same, &mut s, reader)?;
        }
        s.export(READS_EXPORT, ExportKind::Memory, self.reads)
            .export(WRITES_EXPORT, ExportKind::Memory, self.writes);
        Ok(s)
    }

    /// Defined function `defined`, instrumented: its bytes up to each access of memory 0, the
    /// mark, the access and on; or the body as it is when it has none.
    fn function(&self, code: &mut CodeSection, defined: u32, body: FunctionBody<'_>) -> PassResult {
        let wasm = self.wasm;
        let mut reader = body.get_operators_reader()?;
        // Filled at the first access of memory 0: the instructions so far, the temporaries.
        let mut new: Option<(Vec<u8>, Temps)> = None;
        let mut copied = reader.original_position();
        while !reader.eof() {
            let at = reader.original_position();
            let op = reader.read()?;
            let Some(access) = self.access(&op, defined)? else {
                continue;
            };
            if new.is_none() {
                let temps = Temps::new(self.first_temp(defined, &body)?);
                new = Some((Vec::with_capacity(body.range().len() * 2), temps));
            }
            let (bytes, temps) = new.as_mut().expect("just made");
            bytes.extend_from_slice(&wasm[copied..at]);
            if let Access::Grow = access {
                // The grow itself, then the maps grown after it.
                let after = reader.original_position();
                bytes.extend_from_slice(&wasm[at..after]);
                self.grow_maps(&mut InstructionSink::new(bytes));
                copied = after;
            } else {
                self.mark(&mut InstructionSink::new(bytes), temps, access);
                copied = at;
            }
        }
        let Some((mut bytes, temps)) = new else {
            code.raw(&wasm[body.range()]);
            return Ok(());
        };
        bytes.extend_from_slice(&wasm[copied..body.range().end]);
        let (first, added) = (temps.first, temps.types.len() as u32);
        if u64::from(first) + u64::from(added) > u64::from(MAX_LOCALS) {
            return Err(ReError::UserError(ModelError::TooManyLocals {
                function: self.imported_functions + defined,
                locals: u64::from(first),
                added,
                limit: MAX_LOCALS,
            }));
        }
        let mut locals = Vec::new();
        for group in body.get_locals_reader()? {
            let (count, ty) = group?;
            locals.push((count, Same.val_type(ty)?));
        }
        locals.extend(temps.types.iter().map(|&t| (1, t)));
        let mut f = wasm_encoder::Function::new(locals);
        f.raw(bytes);
        code.function(&f);
        Ok(())
    }

    /// The index of the first temporary of defined function `defined`: its parameters and
    /// declared locals come before (wasmparser checked they fit in a `u32`).
    fn first_temp(&self, defined: u32, body: &FunctionBody<'_>) -> PassResult<u32> {
        let mut n = u64::from(self.params[defined as usize]);
        for group in body.get_locals_reader()? {
            n += u64::from(group?.0);
        }
        Ok(n.min(u64::from(u32::MAX)) as u32)
    }

    /// What `op` does to memory 0 that must be marked; `None` for everything else. An
    /// instruction that names memory 0 and that the pass does not know is refused, so nothing
    /// reaches memory 0 unmarked.
    fn access(&self, op: &Operator<'_>, defined: u32) -> PassResult<Option<Access>> {
        use Maps::{Both, Reads, Writes};
        use Operator as O;
        let at = |m: &wasmparser::MemArg, width: u8, maps: Maps, above: &'static [ValType]| {
            (m.memory == 0).then_some(Access::Memory {
                offset: m.offset,
                width,
                maps,
                above,
            })
        };
        Ok(match op {
            // Loads.
            O::I32Load8S { memarg }
            | O::I32Load8U { memarg }
            | O::I64Load8S { memarg }
            | O::I64Load8U { memarg }
            | O::I32AtomicLoad8U { memarg }
            | O::I64AtomicLoad8U { memarg }
            | O::V128Load8Splat { memarg } => at(memarg, 1, Reads, NONE),
            O::I32Load16S { memarg }
            | O::I32Load16U { memarg }
            | O::I64Load16S { memarg }
            | O::I64Load16U { memarg }
            | O::I32AtomicLoad16U { memarg }
            | O::I64AtomicLoad16U { memarg }
            | O::V128Load16Splat { memarg } => at(memarg, 2, Reads, NONE),
            O::I32Load { memarg }
            | O::F32Load { memarg }
            | O::I64Load32S { memarg }
            | O::I64Load32U { memarg }
            | O::I32AtomicLoad { memarg }
            | O::I64AtomicLoad32U { memarg }
            | O::V128Load32Splat { memarg }
            | O::V128Load32Zero { memarg } => at(memarg, 4, Reads, NONE),
            O::I64Load { memarg }
            | O::F64Load { memarg }
            | O::I64AtomicLoad { memarg }
            | O::V128Load8x8S { memarg }
            | O::V128Load8x8U { memarg }
            | O::V128Load16x4S { memarg }
            | O::V128Load16x4U { memarg }
            | O::V128Load32x2S { memarg }
            | O::V128Load32x2U { memarg }
            | O::V128Load64Splat { memarg }
            | O::V128Load64Zero { memarg } => at(memarg, 8, Reads, NONE),
            O::V128Load { memarg } => at(memarg, 16, Reads, NONE),
            O::V128Load8Lane { memarg, .. } => at(memarg, 1, Reads, V128),
            O::V128Load16Lane { memarg, .. } => at(memarg, 2, Reads, V128),
            O::V128Load32Lane { memarg, .. } => at(memarg, 4, Reads, V128),
            O::V128Load64Lane { memarg, .. } => at(memarg, 8, Reads, V128),
            // Waits read the value they compare (and trap on an unshared memory).
            O::MemoryAtomicWait32 { memarg } => at(memarg, 4, Reads, I32_I64),
            O::MemoryAtomicWait64 { memarg } => at(memarg, 8, Reads, I64_I64),
            // Stores.
            O::I32Store8 { memarg } | O::I32AtomicStore8 { memarg } => at(memarg, 1, Writes, I32),
            O::I32Store16 { memarg } | O::I32AtomicStore16 { memarg } => at(memarg, 2, Writes, I32),
            O::I32Store { memarg } | O::I32AtomicStore { memarg } => at(memarg, 4, Writes, I32),
            O::I64Store8 { memarg } | O::I64AtomicStore8 { memarg } => at(memarg, 1, Writes, I64),
            O::I64Store16 { memarg } | O::I64AtomicStore16 { memarg } => at(memarg, 2, Writes, I64),
            O::I64Store32 { memarg } | O::I64AtomicStore32 { memarg } => at(memarg, 4, Writes, I64),
            O::I64Store { memarg } | O::I64AtomicStore { memarg } => at(memarg, 8, Writes, I64),
            O::F32Store { memarg } => at(memarg, 4, Writes, F32),
            O::F64Store { memarg } => at(memarg, 8, Writes, F64),
            O::V128Store { memarg } => at(memarg, 16, Writes, V128),
            O::V128Store8Lane { memarg, .. } => at(memarg, 1, Writes, V128),
            O::V128Store16Lane { memarg, .. } => at(memarg, 2, Writes, V128),
            O::V128Store32Lane { memarg, .. } => at(memarg, 4, Writes, V128),
            O::V128Store64Lane { memarg, .. } => at(memarg, 8, Writes, V128),
            // Read-modify-write: both.
            O::I32AtomicRmw8AddU { memarg }
            | O::I32AtomicRmw8SubU { memarg }
            | O::I32AtomicRmw8AndU { memarg }
            | O::I32AtomicRmw8OrU { memarg }
            | O::I32AtomicRmw8XorU { memarg }
            | O::I32AtomicRmw8XchgU { memarg } => at(memarg, 1, Both, I32),
            O::I32AtomicRmw16AddU { memarg }
            | O::I32AtomicRmw16SubU { memarg }
            | O::I32AtomicRmw16AndU { memarg }
            | O::I32AtomicRmw16OrU { memarg }
            | O::I32AtomicRmw16XorU { memarg }
            | O::I32AtomicRmw16XchgU { memarg } => at(memarg, 2, Both, I32),
            O::I32AtomicRmwAdd { memarg }
            | O::I32AtomicRmwSub { memarg }
            | O::I32AtomicRmwAnd { memarg }
            | O::I32AtomicRmwOr { memarg }
            | O::I32AtomicRmwXor { memarg }
            | O::I32AtomicRmwXchg { memarg } => at(memarg, 4, Both, I32),
            O::I64AtomicRmw8AddU { memarg }
            | O::I64AtomicRmw8SubU { memarg }
            | O::I64AtomicRmw8AndU { memarg }
            | O::I64AtomicRmw8OrU { memarg }
            | O::I64AtomicRmw8XorU { memarg }
            | O::I64AtomicRmw8XchgU { memarg } => at(memarg, 1, Both, I64),
            O::I64AtomicRmw16AddU { memarg }
            | O::I64AtomicRmw16SubU { memarg }
            | O::I64AtomicRmw16AndU { memarg }
            | O::I64AtomicRmw16OrU { memarg }
            | O::I64AtomicRmw16XorU { memarg }
            | O::I64AtomicRmw16XchgU { memarg } => at(memarg, 2, Both, I64),
            O::I64AtomicRmw32AddU { memarg }
            | O::I64AtomicRmw32SubU { memarg }
            | O::I64AtomicRmw32AndU { memarg }
            | O::I64AtomicRmw32OrU { memarg }
            | O::I64AtomicRmw32XorU { memarg }
            | O::I64AtomicRmw32XchgU { memarg } => at(memarg, 4, Both, I64),
            O::I64AtomicRmwAdd { memarg }
            | O::I64AtomicRmwSub { memarg }
            | O::I64AtomicRmwAnd { memarg }
            | O::I64AtomicRmwOr { memarg }
            | O::I64AtomicRmwXor { memarg }
            | O::I64AtomicRmwXchg { memarg } => at(memarg, 8, Both, I64),
            O::I32AtomicRmw8CmpxchgU { memarg } => at(memarg, 1, Both, I32_I32),
            O::I32AtomicRmw16CmpxchgU { memarg } => at(memarg, 2, Both, I32_I32),
            O::I32AtomicRmwCmpxchg { memarg } => at(memarg, 4, Both, I32_I32),
            O::I64AtomicRmw8CmpxchgU { memarg } => at(memarg, 1, Both, I64_I64),
            O::I64AtomicRmw16CmpxchgU { memarg } => at(memarg, 2, Both, I64_I64),
            O::I64AtomicRmw32CmpxchgU { memarg } => at(memarg, 4, Both, I64_I64),
            O::I64AtomicRmwCmpxchg { memarg } => at(memarg, 8, Both, I64_I64),
            // Bulk operations.
            O::MemoryFill { mem: 0 } => Some(Access::Fill),
            O::MemoryInit { mem: 0, .. } => Some(Access::Init),
            &O::MemoryCopy { dst_mem, src_mem } if dst_mem == 0 || src_mem == 0 => {
                Some(Access::Copy {
                    dst: self.address_type(dst_mem, dst_mem == 0),
                    src: self.address_type(src_mem, src_mem == 0),
                })
            }
            O::MemoryGrow { mem: 0 } => Some(Access::Grow),
            // Memory 0 named, nothing of it accessed.
            O::MemorySize { .. } | O::MemoryAtomicNotify { .. } => None,
            other if names_memory_zero(other) => {
                return Err(ReError::UserError(ModelError::UntrackableInstruction {
                    function: self.imported_functions + defined,
                    instruction: format!("{other:?}"),
                }));
            }
            _ => None,
        })
    }

    /// One side of a `memory.copy`: the type of its address and whether it is memory 0.
    fn address_type(&self, memory: u32, zero: bool) -> (ValType, bool) {
        let wide = self.memory64.get(memory as usize).copied().unwrap_or(false);
        (if wide { ValType::I64 } else { ValType::I32 }, zero)
    }

    /// The mark of `access`, in front of the access (which follows, unchanged): the operands
    /// saved into temporaries, the marks made, the operands put back.
    fn mark(&self, sink: &mut InstructionSink<'_>, temps: &mut Temps, access: Access) {
        match access {
            Access::Memory {
                offset,
                width,
                maps,
                above,
            } => {
                // [addr, above…]: save the values above the address, last first.
                let mut saved = [0u32; 2];
                let mut ranks = Ranks::default();
                let addr = temps.get(ValType::I32, ranks.next(ValType::I32));
                for (i, &t) in above.iter().enumerate() {
                    saved[i] = temps.get(t, ranks.next(t));
                }
                for &l in saved[..above.len()].iter().rev() {
                    sink.local_set(l);
                }
                sink.local_tee(addr);
                let mut first = true;
                for (map, wanted) in [(self.reads, maps.reads()), (self.writes, maps.writes())] {
                    if !wanted {
                        continue;
                    }
                    if !first {
                        sink.local_get(addr);
                    }
                    first = false;
                    store_ones(
                        sink,
                        width,
                        MemArg {
                            offset,
                            align: 0,
                            memory_index: map,
                        },
                    );
                }
                sink.local_get(addr);
                for &l in &saved[..above.len()] {
                    sink.local_get(l);
                }
            }
            Access::Fill | Access::Init => {
                // [dst, value or source offset, len]: the destination's bytes are written.
                let mut ranks = Ranks::default();
                let dst = temps.get(ValType::I32, ranks.next(ValType::I32));
                let mid = temps.get(ValType::I32, ranks.next(ValType::I32));
                let len = temps.get(ValType::I32, ranks.next(ValType::I32));
                sink.local_set(len)
                    .local_set(mid)
                    .local_tee(dst)
                    .i32_const(1)
                    .local_get(len)
                    .memory_fill(self.writes)
                    .local_get(dst)
                    .local_get(mid)
                    .local_get(len);
            }
            Access::Copy {
                dst: (dst_type, dst_zero),
                src: (src_type, src_zero),
            } => {
                // [dst, src, len]; len is an i32, as one side (memory 0) is 32-bit.
                let mut ranks = Ranks::default();
                let dst = temps.get(dst_type, ranks.next(dst_type));
                let src = temps.get(src_type, ranks.next(src_type));
                let len = temps.get(ValType::I32, ranks.next(ValType::I32));
                sink.local_set(len).local_set(src).local_set(dst);
                if src_zero {
                    sink.local_get(src)
                        .i32_const(1)
                        .local_get(len)
                        .memory_fill(self.reads);
                }
                if dst_zero {
                    sink.local_get(dst)
                        .i32_const(1)
                        .local_get(len)
                        .memory_fill(self.writes);
                }
                sink.local_get(dst).local_get(src).local_get(len);
            }
            Access::Grow => unreachable!("a grow is followed, not preceded, by its code"),
        }
    }

    /// After a `memory.grow` of memory 0 (its result on the stack, left there): each map smaller
    /// than memory 0 now is grown to its size, or the run traps.
    fn grow_maps(&self, sink: &mut InstructionSink<'_>) {
        for map in [self.reads, self.writes] {
            sink.memory_size(0)
                .memory_size(map)
                .i32_gt_u()
                .if_(wasm_encoder::BlockType::Empty)
                .memory_size(0)
                .memory_size(map)
                .i32_sub()
                .memory_grow(map)
                .i32_const(-1)
                .i32_eq()
                .if_(wasm_encoder::BlockType::Empty)
                .unreachable()
                .end()
                .end();
        }
    }
}

/// The types of the operands above the address of an access, bottom first.
const NONE: &[ValType] = &[];
const I32: &[ValType] = &[ValType::I32];
const I64: &[ValType] = &[ValType::I64];
const F32: &[ValType] = &[ValType::F32];
const F64: &[ValType] = &[ValType::F64];
const V128: &[ValType] = &[ValType::V128];
const I32_I32: &[ValType] = &[ValType::I32, ValType::I32];
const I64_I64: &[ValType] = &[ValType::I64, ValType::I64];
const I32_I64: &[ValType] = &[ValType::I32, ValType::I64];

/// The maps an access marks.
#[derive(Debug, Clone, Copy)]
enum Maps {
    Reads,
    Writes,
    Both,
}

impl Maps {
    fn reads(self) -> bool {
        matches!(self, Maps::Reads | Maps::Both)
    }
    fn writes(self) -> bool {
        matches!(self, Maps::Writes | Maps::Both)
    }
}

/// What an instruction does to memory 0.
#[derive(Debug, Clone, Copy)]
enum Access {
    /// `width` bytes at the address operand plus `offset`; `above`: the types of the operands
    /// above the address.
    Memory {
        offset: u64,
        width: u8,
        maps: Maps,
        above: &'static [ValType],
    },
    /// `memory.fill` of memory 0: `[dst, value, len]`, writes `[dst, dst+len)`.
    Fill,
    /// `memory.init` into memory 0: `[dst, offset, len]`, writes `[dst, dst+len)`.
    Init,
    /// `memory.copy` with memory 0 on one side or both: `[dst, src, len]`; each side's address
    /// type and whether it is memory 0.
    Copy {
        dst: (ValType, bool),
        src: (ValType, bool),
    },
    /// `memory.grow` of memory 0.
    Grow,
}

/// A store of `width` bytes of ones (0x01 each) at the address on the stack, by `memarg`.
fn store_ones(sink: &mut InstructionSink<'_>, width: u8, memarg: MemArg) {
    match width {
        1 => sink.i32_const(0x01).i32_store8(memarg),
        2 => sink.i32_const(0x0101).i32_store16(memarg),
        4 => sink.i32_const(0x0101_0101).i32_store(memarg),
        8 => sink.i64_const(0x0101_0101_0101_0101).i64_store(memarg),
        16 => sink
            .v128_const(i128::from_le_bytes([1; 16]))
            .v128_store(memarg),
        _ => unreachable!("no access is {width} bytes wide"),
    };
}

/// The value types a temporary can have, as an index.
fn type_slot(t: ValType) -> usize {
    match t {
        ValType::I32 => 0,
        ValType::I64 => 1,
        ValType::F32 => 2,
        ValType::F64 => 3,
        ValType::V128 => 4,
        ValType::Ref(_) => unreachable!("no access has a reference operand"),
    }
}

/// The temporaries of one function: local `first + i` has type `types[i]`. A temporary is
/// named by its type and its rank among the operands of that type one instruction saves (an
/// `i32.store` saves two `i32`s: ranks 0 and 1), and made when first needed.
struct Temps {
    first: u32,
    slots: [[Option<u32>; 3]; 5],
    types: Vec<ValType>,
}

impl Temps {
    fn new(first: u32) -> Temps {
        Temps {
            first,
            slots: [[None; 3]; 5],
            types: Vec::new(),
        }
    }

    /// The local of type `t` and rank `rank`.
    fn get(&mut self, t: ValType, rank: usize) -> u32 {
        let slot = &mut self.slots[type_slot(t)][rank];
        *slot.get_or_insert_with(|| {
            self.types.push(t);
            self.first + self.types.len() as u32 - 1
        })
    }
}

/// Ranks handed out per type, for the operands of one instruction.
#[derive(Default)]
struct Ranks([usize; 5]);

impl Ranks {
    fn next(&mut self, t: ValType) -> usize {
        let r = &mut self.0[type_slot(t)];
        *r += 1;
        *r - 1
    }
}

/// Defines `names_memory_zero`: whether an instruction names memory 0, through a memarg or a
/// memory index, over every instruction wasmparser knows (so a proposal's new instruction on
/// memory 0 is refused rather than left unmarked).
macro_rules! define_names_memory_zero {
    ($( @$proposal:ident $op:ident $({ $($arg:ident: $argty:ty),* })? => $visit:ident ($($ann:tt)*))*) => {
        #[allow(unused_variables)]
        fn names_memory_zero(op: &Operator<'_>) -> bool {
            match op {
                $(
                    Operator::$op $({ $($arg),* })? => {
                        false $($( || define_names_memory_zero!(@zero $arg $arg) )*)?
                    }
                )*
                _ => false,
            }
        }
    };
    (@zero memarg $a:ident) => ($a.memory == 0);
    (@zero mem $a:ident) => (*$a == 0);
    (@zero dst_mem $a:ident) => (*$a == 0);
    (@zero src_mem $a:ident) => (*$a == 0);
    (@zero $other:ident $a:ident) => (false);
}
wasmparser::for_each_operator!(define_names_memory_zero);

#[cfg(test)]
mod tests {
    use super::{Temps, names_memory_zero, order};
    use wasm_encoder::ValType;
    use wasmparser::{MemArg, Operator};

    #[test]
    fn sections_are_ordered_as_the_spec_says() {
        // type, import, function, table, memory, tag, global, export, start, element,
        // data count, code, data.
        let ids = [1u8, 2, 3, 4, 5, 13, 6, 7, 8, 9, 12, 10, 11];
        for w in ids.windows(2) {
            assert!(order(w[0]) < order(w[1]), "{w:?}");
        }
    }

    #[test]
    fn temporaries_are_made_once_per_type_and_rank() {
        let mut t = Temps::new(7);
        assert_eq!(t.get(ValType::I32, 0), 7);
        assert_eq!(t.get(ValType::I64, 0), 8);
        assert_eq!(t.get(ValType::I32, 1), 9);
        assert_eq!(t.get(ValType::I32, 0), 7);
        assert_eq!(t.types, [ValType::I32, ValType::I64, ValType::I32]);
    }

    #[test]
    fn memory_zero_is_found_in_any_instruction() {
        let memarg = |memory| MemArg {
            align: 0,
            max_align: 0,
            offset: 0,
            memory,
        };
        assert!(names_memory_zero(&Operator::I32Load { memarg: memarg(0) }));
        assert!(!names_memory_zero(&Operator::I32Load { memarg: memarg(1) }));
        assert!(names_memory_zero(&Operator::MemoryDiscard { mem: 0 }));
        assert!(names_memory_zero(&Operator::MemoryCopy {
            dst_mem: 1,
            src_mem: 0
        }));
        assert!(!names_memory_zero(&Operator::MemoryCopy {
            dst_mem: 1,
            src_mem: 2
        }));
        assert!(!names_memory_zero(&Operator::DataDrop { data_index: 0 }));
        assert!(!names_memory_zero(&Operator::I32Add));
    }
}
