//! Point names: how a user names the functions to turn into migration points or to offload.

use clonecloud_exec::Points;

/// Why a list of point names was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PointsError {
    #[error("an empty name: give `all` or NAME,NAME,...")]
    Empty,
    #[error("`all` cannot be combined with names")]
    AllWithNames,
}

/// `all`, or names separated by commas (each value may hold several). A comma followed by a
/// space, or inside `<…>`, `(…)` or `[…]`, belongs to a demangled name (`f<a, b>`) and does not
/// split. Names are matched against the module later: name-section names, demangled names,
/// export names, `#INDEX`.
pub fn parse(values: &[String]) -> Result<Points, PointsError> {
    if values.is_empty() {
        return Ok(Points::None);
    }
    let mut names = Vec::new();
    for value in values {
        let mut depth = 0i32;
        let mut start = 0;
        let bytes = value.as_bytes();
        for (i, &b) in bytes.iter().enumerate() {
            match b {
                b'<' | b'(' | b'[' => depth += 1,
                b'>' | b')' | b']' if depth > 0 => depth -= 1,
                b',' if depth == 0 && bytes.get(i + 1) != Some(&b' ') => {
                    names.push(value[start..i].trim().to_string());
                    start = i + 1;
                }
                _ => {}
            }
        }
        names.push(value[start..].trim().to_string());
    }
    if names.iter().any(|n| n.is_empty()) {
        return Err(PointsError::Empty);
    }
    if names.iter().any(|n| n == "all") {
        if names.len() > 1 {
            return Err(PointsError::AllWithNames);
        }
        return Ok(Points::All);
    }
    Ok(Points::Named(names))
}

/// A point's name for reports: its demangled name-section name, else `#INDEX`.
pub fn name(model: &clonecloud_model::Module, function: u32) -> String {
    model.functions.get(function as usize).and_then(|f| f.name.as_deref()).map_or_else(|| format!("#{function}"), clonecloud_model::demangle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_split_on_commas_outside_generics() {
        let p = parse(&["a,b::c,f<x, y>,#4".into()]).unwrap();
        assert_eq!(p, Points::Named(vec!["a".into(), "b::c".into(), "f<x, y>".into(), "#4".into()]));
        assert_eq!(parse(&["all".into()]).unwrap(), Points::All);
        assert_eq!(parse(&["a,,b".into()]), Err(PointsError::Empty));
        assert_eq!(parse(&["all,main".into()]), Err(PointsError::AllWithNames));
    }
}
