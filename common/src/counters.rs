//! Counter enumerations, written once: each variant's index, its name in the API and the
//! metrics, and how many slots its counter arrays reserve. The slots are headroom: counter
//! arrays are sized by `SLOTS`, not by the variants there are today, so a newer xnic can add
//! a variant without changing the layout of maps an older one pinned.

/// Makes a counter enumeration: `COUNT`, `SLOTS`, `ALL`, `name()` and `from_name()`.
/// Variants must be numbered 0, 1, 2, ... in order (checked at compile time).
#[macro_export]
macro_rules! counters {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident: $repr:ty, slots = $slots:expr, {
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal => $text:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[repr($repr)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant = $value, )*
        }

        impl $name {
            /// Variants there are.
            pub const COUNT: usize = [$($value),*].len();
            /// Counter slots reserved per owner (port, VM, ...) in the pinned arrays: room for
            /// variants a newer xnic adds.
            pub const SLOTS: usize = $slots;
            pub const ALL: [$name; Self::COUNT] = [$($name::$variant),*];

            pub const fn name(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )*
                }
            }

            /// The variant with index `i`, if there is one.
            #[inline(always)]
            pub const fn from_index(i: u32) -> Option<$name> {
                if (i as usize) < Self::COUNT {
                    Some(Self::ALL[i as usize])
                } else {
                    None
                }
            }

            pub fn from_name(name: &str) -> Option<$name> {
                match name {
                    $( $text => Some($name::$variant), )*
                    _ => None,
                }
            }
        }

        const _: () = {
            assert!($name::COUNT <= $name::SLOTS, "more variants than reserved slots");
            let mut i = 0;
            while i < $name::COUNT {
                assert!($name::ALL[i] as usize == i, "variants must be numbered in order");
                i += 1;
            }
        };
    };
}
