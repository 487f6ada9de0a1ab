//! Test support: which fields of a shared structure sit on which cache
//! lines.
//!
//! Each structure with hot fields lists its fields (offset, size, and a
//! *group*: fields of one group may share a line, fields of different
//! groups may not). A hot field is a group of its own; fields that are
//! only read, or written so rarely that it does not matter (growth,
//! truncation, a panic), share the group `COLD`. [`check`] then asserts
//! that no line holds bytes of two groups, and that the structure starts on
//! a line (so that offsets are lines). Nested structures are folded in with
//! [`nest`].

use crate::core::sync::LINE;

/// Fields only read after construction, or written rarely.
pub(crate) const COLD: &str = "cold";

/// One field: where it is and which group it belongs to.
#[derive(Clone, Debug)]
pub(crate) struct Field {
    pub(crate) name: String,
    pub(crate) offset: usize,
    pub(crate) size: usize,
    pub(crate) group: String,
}

/// The size of the field `f` reaches (for [`field!`]).
pub(crate) fn size_of_field<T, F>(_: impl Fn(&T) -> &F) -> usize {
    std::mem::size_of::<F>()
}

/// `field!(Type, name, group)`: the [`Field`] of `Type::name`. The group
/// `hot` names a group of the field's own.
macro_rules! field {
    ($ty:ty, $name:ident, hot) => {
        $crate::core::layout::Field {
            name: stringify!($name).to_string(),
            offset: std::mem::offset_of!($ty, $name),
            size: $crate::core::layout::size_of_field(|s: &$ty| &s.$name),
            group: stringify!($name).to_string(),
        }
    };
    ($ty:ty, $name:ident, $group:expr) => {
        $crate::core::layout::Field {
            name: stringify!($name).to_string(),
            offset: std::mem::offset_of!($ty, $name),
            size: $crate::core::layout::size_of_field(|s: &$ty| &s.$name),
            group: $group.to_string(),
        }
    };
}
pub(crate) use field;

/// The fields of a structure nested at `offset` as field `name`, renamed
/// `name.field` and shifted; their groups are kept (a group of the nested
/// structure's own is prefixed, so it stays its own).
pub(crate) fn nest(name: &str, offset: usize, fields: Vec<Field>) -> Vec<Field> {
    fields
        .into_iter()
        .map(|f| Field {
            name: format!("{name}.{}", f.name),
            offset: offset + f.offset,
            size: f.size,
            group: if f.group == COLD {
                f.group
            } else {
                format!("{name}.{}", f.group)
            },
        })
        .collect()
}

/// The lines a field's bytes cover.
fn lines(f: &Field) -> std::ops::RangeInclusive<usize> {
    f.offset / LINE..=(f.offset + f.size - 1) / LINE
}

/// Checks that no line holds bytes of two groups, and that `T` starts on
/// a line. Returns every violation, described.
pub(crate) fn check<T>(fields: &[Field]) -> Result<(), String> {
    let ty = std::any::type_name::<T>();
    let mut problems = Vec::new();
    if std::mem::align_of::<T>() < LINE {
        problems.push(format!(
            "{ty} is aligned to {} bytes, less than a line ({LINE})",
            std::mem::align_of::<T>()
        ));
    }
    let sized: Vec<&Field> = fields.iter().filter(|f| f.size > 0).collect();
    for (i, a) in sized.iter().enumerate() {
        for b in &sized[i + 1..] {
            let (la, lb) = (lines(a), lines(b));
            let shared = la.start() <= lb.end() && lb.start() <= la.end();
            if a.group != b.group && shared {
                problems.push(format!(
                    "{ty}: {} (group {}, bytes {}..{}) shares a line with {} (group {}, bytes {}..{})",
                    a.name,
                    a.group,
                    a.offset,
                    a.offset + a.size,
                    b.name,
                    b.group,
                    b.offset,
                    b.offset + b.size
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checker itself: it finds two hot fields on one line, and passes
    /// padded ones.
    #[test]
    fn the_checker_finds_a_shared_line() {
        #[repr(C, align(128))]
        struct Bad {
            a: u64,
            b: u64,
        }
        #[repr(C)]
        struct Good {
            a: crate::core::sync::CachePadded<u64>,
            b: crate::core::sync::CachePadded<u64>,
        }
        let bad = [field!(Bad, a, hot), field!(Bad, b, hot)];
        assert!(check::<Bad>(&bad).unwrap_err().contains("a (group a"));
        let good = [field!(Good, a, hot), field!(Good, b, hot)];
        check::<Good>(&good).unwrap();
        let cold = [field!(Bad, a, COLD), field!(Bad, b, COLD)];
        check::<Bad>(&cold).unwrap();
    }

    /// crossbeam pads to 128 bytes where the prefetcher pulls line pairs.
    #[test]
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn a_line_is_128_bytes_here() {
        assert_eq!(LINE, 128);
    }
}
