//! A generated module of the size of a large C++ program (tens of thousands of functions), so
//! what `--points all` costs per function shows: see [`generate`].
//!
//! Included by `benches/big.rs` (`#[path]`); the emitter is `cargo bench -p clonecloud --bench
//! big -- emit PATH [FUNCTIONS [DEPTH]]`.
#![allow(dead_code)]

use wasm_encoder::{
    BlockType, CodeSection, ConstExpr, DataSection, ElementSection, Elements, EntityType,
    ExportKind, ExportSection, Function, FunctionSection, GlobalSection, GlobalType,
    ImportSection, IndirectNameMap, Instruction as I, MemArg, MemorySection, MemoryType, Module,
    NameMap, NameSection, RefType, TableSection, TableType, TypeSection, ValType,
};

/// The shape of the generated module.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Defined functions besides `_start`.
    pub functions: u32,
    /// Recursion depth of each call `_start` makes: every function calls two others with
    /// depth - 1, so a root costs about 2^depth calls.
    pub depth: u32,
    /// Roots `_start` calls.
    pub roots: u32,
    /// Straight-line arithmetic per function (bytes of body grow with it).
    pub padding: u32,
    /// 0: a function calls any of the others, uniformly (every call lands far away: the worst
    /// case for caches, and for the migration points' flags). Otherwise it calls one of the next
    /// `spread` functions (after `_start`'s roots, calls stay near each other, as in real code).
    pub spread: u32,
}

impl Default for Shape {
    fn default() -> Self {
        Shape { functions: 50_000, depth: 14, roots: 24, padding: 24, spread: 0 }
    }
}

// Types: 0 (i32)->i32, 1 (i32,i32)->i32, 2 (i32,i64)->i64, 3 (i32)->(), 4 fd_write,
// 5 proc_exit (i32)->(), 6 _start ()->().
const T_FD_WRITE: u32 = 4;
const T_PROC_EXIT: u32 = 5;
const T_START: u32 = 6;
const KINDS: u32 = 4;
/// Imported functions: fd_write (0), proc_exit (1).
const IMPORTS: u32 = 2;
/// Every `TABLE_EVERY`-th function of kind 0 sits in the table.
const TABLE_EVERY: u32 = 7;
/// Scratch memory the functions of kind 3 write to.
const SCRATCH: i32 = 4096;

fn kind(i: u32) -> u32 {
    // Mostly kind 0, like C code full of int-returning helpers.
    match i % 10 {
        0..=4 => 0,
        5 | 6 => 1,
        7 | 8 => 2,
        _ => 3,
    }
}

fn hash(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51afd7ed558ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ceb9fe1a85ec53);
    x ^ (x >> 33)
}

/// A mangled-looking C++ name, long as real ones are.
fn name(i: u32) -> String {
    format!("_ZN7project6module{}9Component{}12do_somethingEv{}", i % 97, i, hash(i as u64) % 1000)
}

/// Generates a valid WASI command module: `shape.functions` defined functions calling one
/// another (two direct calls, one in seven through a `call_indirect`), a memory with data, a
/// table, a mutable `__stack_pointer`, a `name` section with a name for every function and its
/// locals, and a `_start` that calls `shape.roots` functions and prints a checksum.
pub fn generate(shape: &Shape) -> Vec<u8> {
    let n = shape.functions;
    let first = IMPORTS; // index of defined function 0
    let start = first + n; // `_start`'s index
    let mut types = TypeSection::new();
    types.ty().function([ValType::I32], [ValType::I32]);
    types.ty().function([ValType::I32, ValType::I32], [ValType::I32]);
    types.ty().function([ValType::I32, ValType::I64], [ValType::I64]);
    types.ty().function([ValType::I32], []);
    types.ty().function([ValType::I32; 4], [ValType::I32]);
    types.ty().function([ValType::I32], []);
    types.ty().function([], []);

    let mut imports = ImportSection::new();
    imports.import("wasi_snapshot_preview1", "fd_write", EntityType::Function(T_FD_WRITE));
    imports.import("wasi_snapshot_preview1", "proc_exit", EntityType::Function(T_PROC_EXIT));

    let mut functions = FunctionSection::new();
    for i in 0..n {
        functions.function(kind(i));
    }
    functions.function(T_START);

    let in_table: Vec<u32> = (0..n).filter(|&i| kind(i) == 0 && i % TABLE_EVERY == 0).map(|i| first + i).collect();
    let mut tables = TableSection::new();
    tables.table(TableType {
        element_type: RefType::FUNCREF,
        table64: false,
        minimum: in_table.len() as u64 + 1,
        maximum: Some(in_table.len() as u64 + 1),
        shared: false,
    });
    let mut memories = MemorySection::new();
    memories.memory(MemoryType { minimum: 17, maximum: None, memory64: false, shared: false, page_size_log2: None });
    let mut globals = GlobalSection::new();
    globals.global(
        GlobalType { val_type: ValType::I32, mutable: true, shared: false },
        &ConstExpr::i32_const(17 * 65536),
    );
    let mut exports = ExportSection::new();
    exports.export("memory", ExportKind::Memory, 0);
    exports.export("_start", ExportKind::Func, start);
    // A few exported helpers, as a library-ish program has.
    for i in (0..n).step_by(1000) {
        exports.export(&format!("helper{i}"), ExportKind::Func, first + i);
    }
    let mut elements = ElementSection::new();
    elements.active(Some(0), &ConstExpr::i32_const(1), Elements::Functions(in_table.as_slice().into()));

    let mut code = CodeSection::new();
    for i in 0..n {
        code.function(&body(i, n, in_table.len() as u32, shape));
    }
    code.function(&start_body(shape, n));

    let mut data = DataSection::new();
    let blob: Vec<u8> = (0..4096u32).map(|b| (hash(b as u64) & 0xff) as u8).collect();
    data.active(0, &ConstExpr::i32_const(1 << 16), blob);
    data.active(0, &ConstExpr::i32_const(64), b"ok ".to_vec());

    let mut names = NameSection::new();
    let mut fnames = NameMap::new();
    fnames.append(0, "__wasi_fd_write");
    fnames.append(1, "__wasi_proc_exit");
    let owned: Vec<String> = (0..n).map(name).collect();
    for (i, s) in owned.iter().enumerate() {
        fnames.append(first + i as u32, s);
    }
    fnames.append(start, "_start");
    names.functions(&fnames);
    let mut locals = IndirectNameMap::new();
    let mut l = NameMap::new();
    l.append(0, "depth");
    for i in (0..n).step_by(3) {
        locals.append(first + i, &l);
    }
    names.locals(&locals);

    let mut module = Module::new();
    module
        .section(&types)
        .section(&imports)
        .section(&functions)
        .section(&tables)
        .section(&memories)
        .section(&globals)
        .section(&exports)
        .section(&elements)
        .section(&code)
        .section(&data)
        .section(&names);
    module.finish()
}

/// Leaves callee `j`'s result (given depth on the stack below) as an i64.
fn call_as_i64(f: &mut Function, first: u32, j: u32, salt: i64) {
    // Stack: depth (i32).
    match kind(j) {
        0 => {
            f.instruction(&I::Call(first + j));
            f.instruction(&I::I64ExtendI32U);
        }
        1 => {
            f.instruction(&I::I32Const(salt as i32));
            f.instruction(&I::Call(first + j));
            f.instruction(&I::I64ExtendI32U);
        }
        2 => {
            f.instruction(&I::I64Const(salt));
            f.instruction(&I::Call(first + j));
        }
        _ => {
            f.instruction(&I::Call(first + j));
            f.instruction(&I::I32Const(SCRATCH));
            f.instruction(&I::I64Load(MemArg { offset: ((j % 64) * 8) as u64, align: 3, memory_index: 0 }));
        }
    }
}

fn body(i: u32, n: u32, table_len: u32, shape: &Shape) -> Function {
    let first = IMPORTS;
    let k = kind(i);
    // Locals after the params: one i64 accumulator.
    let params = match k {
        0 | 3 => 1,
        _ => 2,
    };
    let acc = params;
    let mut f = Function::new([(1, ValType::I64)]);
    let h = hash(i as u64);
    let (c1, c2) = match shape.spread {
        0 => ((h % n as u64) as u32, ((h >> 20) % n as u64) as u32),
        s => ((i + 1 + (h % s as u64) as u32) % n, (i + 1 + ((h >> 20) % s as u64) as u32) % n),
    };
    // acc = seed (+ second param)
    f.instruction(&I::I64Const((h >> 8) as i64 & 0xffff));
    match k {
        1 => {
            f.instruction(&I::LocalGet(1));
            f.instruction(&I::I64ExtendI32U);
            f.instruction(&I::I64Add);
        }
        2 => {
            f.instruction(&I::LocalGet(1));
            f.instruction(&I::I64Add);
        }
        _ => {}
    }
    f.instruction(&I::LocalSet(acc));
    // if depth != 0: acc += c1(depth-1) + c2(depth-1) [+ table[...](depth-1)]
    f.instruction(&I::LocalGet(0));
    f.instruction(&I::If(BlockType::Empty));
    for (c, salt) in [(c1, 3i64), (c2, 5)] {
        f.instruction(&I::LocalGet(0));
        f.instruction(&I::I32Const(1));
        f.instruction(&I::I32Sub);
        call_as_i64(&mut f, first, c, salt);
        f.instruction(&I::LocalGet(acc));
        f.instruction(&I::I64Add);
        f.instruction(&I::LocalSet(acc));
    }
    if i % 7 == 3 {
        // An indirect call to a kind-0 function in the table, at depth - 2 so the tree stays
        // about binary.
        f.instruction(&I::LocalGet(0));
        f.instruction(&I::I32Const(1));
        f.instruction(&I::I32GtU);
        f.instruction(&I::If(BlockType::Empty));
        f.instruction(&I::LocalGet(0));
        f.instruction(&I::I32Const(2));
        f.instruction(&I::I32Sub);
        f.instruction(&I::I32Const(1 + ((h >> 40) % table_len as u64) as i32));
        f.instruction(&I::CallIndirect { type_index: 0, table_index: 0 });
        f.instruction(&I::I64ExtendI32U);
        f.instruction(&I::LocalGet(acc));
        f.instruction(&I::I64Xor);
        f.instruction(&I::LocalSet(acc));
        f.instruction(&I::End);
    }
    f.instruction(&I::End);
    // Straight-line mixing, reading the data segment.
    for p in 0..shape.padding {
        let m = hash((i as u64) << 8 | p as u64);
        f.instruction(&I::LocalGet(acc));
        f.instruction(&I::I64Const((m | 1) as i64));
        f.instruction(&I::I64Mul);
        f.instruction(&I::I32Const(1 << 16));
        f.instruction(&I::I64Load32U(MemArg { offset: (m % 4092) & !3, align: 2, memory_index: 0 }));
        f.instruction(&I::I64Xor);
        f.instruction(&I::I64Const(((m >> 32) % 61 + 1) as i64));
        f.instruction(&I::I64Rotl);
        f.instruction(&I::LocalSet(acc));
    }
    match k {
        0 | 1 => {
            f.instruction(&I::LocalGet(acc));
            f.instruction(&I::I32WrapI64);
        }
        2 => {
            f.instruction(&I::LocalGet(acc));
        }
        _ => {
            f.instruction(&I::I32Const(SCRATCH));
            f.instruction(&I::LocalGet(acc));
            f.instruction(&I::I64Store(MemArg { offset: ((i % 64) * 8) as u64, align: 3, memory_index: 0 }));
        }
    }
    f.instruction(&I::End);
    f
}

/// `_start`: sums the roots' results, writes "ok <16 hex digits>\n" to stdout, returns.
fn start_body(shape: &Shape, n: u32) -> Function {
    let first = IMPORTS;
    // Locals: acc (i64) = 0, digit counter (i32) = 1.
    let mut f = Function::new([(1, ValType::I64), (1, ValType::I32)]);
    for r in 0..shape.roots {
        let j = (hash(0x5eed + r as u64) % n as u64) as u32;
        f.instruction(&I::I32Const(shape.depth as i32));
        call_as_i64(&mut f, first, j, r as i64);
        f.instruction(&I::LocalGet(0));
        f.instruction(&I::I64Add);
        f.instruction(&I::LocalSet(0));
    }
    // 16 hex digits at 67..83, newline at 83.
    f.instruction(&I::I32Const(0));
    f.instruction(&I::LocalSet(1));
    f.instruction(&I::Block(BlockType::Empty));
    f.instruction(&I::Loop(BlockType::Empty));
    f.instruction(&I::LocalGet(1));
    f.instruction(&I::I32Const(16));
    f.instruction(&I::I32GeU);
    f.instruction(&I::BrIf(1));
    // mem[82 - counter] = hex(acc & 15)
    f.instruction(&I::I32Const(82));
    f.instruction(&I::LocalGet(1));
    f.instruction(&I::I32Sub);
    f.instruction(&I::LocalGet(0));
    f.instruction(&I::I32WrapI64);
    f.instruction(&I::I32Const(15));
    f.instruction(&I::I32And);
    f.instruction(&I::I32Const(48));
    f.instruction(&I::I32Add);
    f.instruction(&I::LocalGet(0));
    f.instruction(&I::I32WrapI64);
    f.instruction(&I::I32Const(15));
    f.instruction(&I::I32And);
    f.instruction(&I::I32Const(9));
    f.instruction(&I::I32GtU);
    f.instruction(&I::I32Const(39));
    f.instruction(&I::I32Mul);
    f.instruction(&I::I32Add);
    f.instruction(&I::I32Store8(MemArg { offset: 0, align: 0, memory_index: 0 }));
    f.instruction(&I::LocalGet(0));
    f.instruction(&I::I64Const(4));
    f.instruction(&I::I64ShrU);
    f.instruction(&I::LocalSet(0));
    f.instruction(&I::LocalGet(1));
    f.instruction(&I::I32Const(1));
    f.instruction(&I::I32Add);
    f.instruction(&I::LocalSet(1));
    f.instruction(&I::Br(0));
    f.instruction(&I::End);
    f.instruction(&I::End);
    f.instruction(&I::I32Const(83));
    f.instruction(&I::I32Const(10));
    f.instruction(&I::I32Store8(MemArg { offset: 0, align: 0, memory_index: 0 }));
    // iovec at 0: {64, 20}
    f.instruction(&I::I32Const(0));
    f.instruction(&I::I32Const(64));
    f.instruction(&I::I32Store(MemArg { offset: 0, align: 2, memory_index: 0 }));
    f.instruction(&I::I32Const(0));
    f.instruction(&I::I32Const(20));
    f.instruction(&I::I32Store(MemArg { offset: 4, align: 2, memory_index: 0 }));
    f.instruction(&I::I32Const(1));
    f.instruction(&I::I32Const(0));
    f.instruction(&I::I32Const(1));
    f.instruction(&I::I32Const(16));
    f.instruction(&I::Call(0));
    f.instruction(&I::Drop);
    f.instruction(&I::End);
    f
}
