//! Function names as a user writes them: Rust's mangled symbols made readable.

/// The readable form of a function name from the `name` section: Rust legacy (`_ZN…E`) and v0
/// (`_R…`) symbols demangled, and the trailing `::h<16 hex>` hash that wasm-ld leaves on already
/// demangled Rust names removed. Other names come back unchanged.
pub fn demangle(name: &str) -> String {
    let readable = match rustc_demangle::try_demangle(name) {
        Ok(d) => format!("{d:#}"),
        Err(_) => name.to_string(),
    };
    strip_hash(&readable).to_string()
}

fn strip_hash(name: &str) -> &str {
    if let Some(pos) = name.rfind("::h") {
        let hash = &name[pos + 3..];
        if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return &name[..pos];
        }
    }
    name
}

#[cfg(test)]
mod tests {
    use super::demangle;

    #[test]
    fn demangles_rust_names() {
        assert_eq!(
            demangle("_ZN5probe6crunch17h0123456789abcdefE"),
            "probe::crunch"
        );
        assert_eq!(
            demangle("probe::crunch::h0123456789abcdef"),
            "probe::crunch"
        );
        assert_eq!(demangle("__main_void"), "__main_void");
        assert_eq!(demangle("a::h12"), "a::h12");
    }
}
