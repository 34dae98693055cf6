//! wasm values and pages between wasmtime and the wire.

use clonecloud_exec::state::Page;
use clonecloud_wire::{PageDelta, State, Value};
use wasmtime::Val;

/// A wire value for a wasm value; `None` for references, which never migrate.
pub fn to_wire(v: &Val) -> Option<Value> {
    Some(match *v {
        Val::I32(x) => Value::I32(x),
        Val::I64(x) => Value::I64(x),
        Val::F32(x) => Value::F32(x),
        Val::F64(x) => Value::F64(x),
        _ => return None,
    })
}

pub fn from_wire(v: &Value) -> Val {
    match *v {
        Value::I32(x) => Val::I32(x),
        Value::I64(x) => Val::I64(x),
        Value::F32(x) => Val::F32(x),
        Value::F64(x) => Val::F64(x),
    }
}

pub fn values_to_wire(vs: &[Val]) -> Option<Vec<Value>> {
    vs.iter().map(to_wire).collect()
}

pub fn values_from_wire(vs: &[Value]) -> Vec<Val> {
    vs.iter().map(from_wire).collect()
}

/// The wire form of a captured state.
pub fn state(wasm_pages: u32, pages: Vec<Page>, globals: &[(u32, Val)]) -> Option<State> {
    Some(State {
        globals: globals.iter().map(|(g, v)| Some((*g, to_wire(v)?))).collect::<Option<Vec<_>>>()?,
        memory: PageDelta { wasm_pages, page_size: clonecloud_exec::state::PAGE_SIZE as u32, pages, xor: false },
    })
}

/// Globals of a wire state, for applying.
pub fn globals(s: &State) -> Vec<(u32, Val)> {
    s.globals.iter().map(|(g, v)| (*g, from_wire(v))).collect()
}

/// Payload bytes of a state (pages), for statistics.
pub fn state_bytes(s: &State) -> u64 {
    s.memory.pages.iter().map(|(_, p)| 4 + p.len() as u64).sum::<u64>() + 13 * s.globals.len() as u64
}
