//! Just enough of the Portable Executable format to tell a PE file and find its entry point.

fn u16_at(d: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(d.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(d.get(at..at + 4)?.try_into().ok()?))
}

/// The file offset of a PE file's entry point, or `None` when `data` is not a PE file.
/// A PE file whose entry point lies outside every section and the headers yields `Some(None)`.
pub fn entry_point(data: &[u8]) -> Option<Option<u64>> {
    if !data.starts_with(b"MZ") {
        return None;
    }
    let pe = u32_at(data, 0x3c)? as usize;
    if data.get(pe..pe.checked_add(4)?)? != b"PE\0\0" {
        return None;
    }
    let coff = pe + 4;
    let sections = u16_at(data, coff + 2)? as usize;
    let optional_size = u16_at(data, coff + 16)? as usize;
    let optional = coff + 20;
    let entry_rva = u32_at(data, optional + 16)?;
    let size_of_headers = u32_at(data, optional + 60).unwrap_or(0);
    let table = optional + optional_size;
    for i in 0..sections {
        let s = table + 40 * i;
        let (Some(vsize), Some(va), Some(raw_size), Some(raw)) =
            (u32_at(data, s + 8), u32_at(data, s + 12), u32_at(data, s + 16), u32_at(data, s + 20))
        else {
            break;
        };
        let extent = vsize.max(raw_size);
        if entry_rva >= va && entry_rva - va < extent {
            return Some(Some(u64::from(entry_rva - va) + u64::from(raw)));
        }
    }
    Some((entry_rva < size_of_headers).then_some(u64::from(entry_rva)))
}
