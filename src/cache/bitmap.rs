//! Presence bitmaps: bit `i` says block `i` is present. In memory as `u64` words; on disk as
//! `ceil(len / 8)` bytes, bit `i` in byte `i / 8` at position `i % 8` (LSB first), with the
//! unused high bits of the last byte zero.

use std::ops::Range;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bitmap {
    words: Vec<u64>,
    len: u64,
}

impl Bitmap {
    /// `len` clear bits.
    pub fn new(len: u64) -> Bitmap {
        Bitmap {
            words: vec![0; len.div_ceil(64) as usize],
            len,
        }
    }

    /// `len` set bits.
    pub fn full(len: u64) -> Bitmap {
        let mut b = Bitmap {
            words: vec![u64::MAX; len.div_ceil(64) as usize],
            len,
        };
        if len % 64 != 0 {
            if let Some(last) = b.words.last_mut() {
                *last = (1u64 << (len % 64)) - 1;
            }
        }
        b
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn get(&self, i: u64) -> bool {
        debug_assert!(i < self.len);
        self.words[(i / 64) as usize] & (1 << (i % 64)) != 0
    }

    /// Sets bit `i`; true if it was clear.
    pub fn set(&mut self, i: u64) -> bool {
        debug_assert!(i < self.len);
        let w = &mut self.words[(i / 64) as usize];
        let m = 1u64 << (i % 64);
        let was_clear = *w & m == 0;
        *w |= m;
        was_clear
    }

    pub fn count_ones(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// True when every bit in `r` is set (vacuously for an empty range).
    pub fn all_set(&self, r: Range<u64>) -> bool {
        self.first_clear(r).is_none()
    }

    /// The first clear bit in `r`.
    fn first_clear(&self, r: Range<u64>) -> Option<u64> {
        let mut i = r.start;
        while i < r.end {
            let w = self.words[(i / 64) as usize] | ((1u64 << (i % 64)) - 1);
            if w != u64::MAX {
                let bit = (i / 64) * 64 + u64::from((!w).trailing_zeros());
                return (bit < r.end).then_some(bit);
            }
            i = (i / 64 + 1) * 64;
        }
        None
    }

    /// The first set bit in `r`.
    fn first_set(&self, r: Range<u64>) -> Option<u64> {
        let mut i = r.start;
        while i < r.end {
            let w = self.words[(i / 64) as usize] & !((1u64 << (i % 64)) - 1);
            if w != 0 {
                let bit = (i / 64) * 64 + u64::from(w.trailing_zeros());
                return (bit < r.end).then_some(bit);
            }
            i = (i / 64 + 1) * 64;
        }
        None
    }

    /// Maximal runs of clear bits within `r`, in order.
    pub fn clear_runs(&self, r: Range<u64>) -> Vec<Range<u64>> {
        let mut out = Vec::new();
        let mut i = r.start;
        while let Some(s) = self.first_clear(i..r.end) {
            let e = self.first_set(s..r.end).unwrap_or(r.end);
            out.push(s..e);
            i = e;
        }
        out
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let n = self.len.div_ceil(8) as usize;
        let mut out = Vec::with_capacity(n);
        for w in &self.words {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.truncate(n);
        out
    }

    /// Parses the on-disk form; `None` if the length is wrong or bits beyond `len` are set.
    pub fn from_bytes(bytes: &[u8], len: u64) -> Option<Bitmap> {
        if bytes.len() as u64 != len.div_ceil(8) {
            return None;
        }
        let mut words = Vec::with_capacity(len.div_ceil(64) as usize);
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            words.push(u64::from_le_bytes(b));
        }
        if len % 64 != 0 {
            let last = *words.last().expect("len > 0 here");
            if last >> (len % 64) != 0 {
                return None;
            }
        }
        Some(Bitmap { words, len })
    }
}

/// Re-expresses presence for another block size: a new block is present only if every old
/// block overlapping it is.
pub(crate) fn convert(old: &Bitmap, old_bs: u64, new_bs: u64, size: u64) -> Bitmap {
    let n = size.div_ceil(new_bs);
    let mut out = Bitmap::new(n);
    for j in 0..n {
        let start = j * new_bs;
        let end = (start + new_bs).min(size);
        if old.all_set(start / old_bs..end.div_ceil(old_bs)) {
            out.set(j);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_runs(b: &Bitmap, r: Range<u64>) -> Vec<Range<u64>> {
        let mut out: Vec<Range<u64>> = Vec::new();
        for i in r {
            if !b.get(i) {
                match out.last_mut() {
                    Some(last) if last.end == i => last.end = i + 1,
                    _ => out.push(i..i + 1),
                }
            }
        }
        out
    }

    #[test]
    fn runs_match_a_naive_scan() {
        // A deterministic pseudo-random pattern over several words, plus every sub-range
        // boundary near word edges.
        for len in [0u64, 1, 63, 64, 65, 127, 128, 200] {
            let mut b = Bitmap::new(len);
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            for i in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if x % 3 == 0 || (64..70).contains(&i) {
                    b.set(i);
                }
            }
            for s in [0, 1, 62, 63, 64, 65, 100, 127, 128, 199] {
                for e in [s, s + 1, 63, 64, 65, 128, 129, len] {
                    if s <= e && e <= len {
                        assert_eq!(b.clear_runs(s..e), naive_runs(&b, s..e), "{len} {s}..{e}");
                        assert_eq!(b.all_set(s..e), naive_runs(&b, s..e).is_empty());
                    }
                }
            }
            let back = Bitmap::from_bytes(&b.to_bytes(), len).unwrap();
            assert_eq!(back, b);
        }
    }

    #[test]
    fn full_and_counts() {
        for len in [0u64, 1, 64, 65, 130] {
            let f = Bitmap::full(len);
            assert_eq!(f.count_ones(), len);
            assert!(f.clear_runs(0..len).is_empty());
            assert_eq!(Bitmap::from_bytes(&f.to_bytes(), len), Some(f));
        }
    }

    #[test]
    fn bad_encodings_are_refused() {
        assert!(Bitmap::from_bytes(&[0, 0], 9).is_some());
        assert!(Bitmap::from_bytes(&[0], 9).is_none());
        assert!(Bitmap::from_bytes(&[0, 0, 0], 9).is_none());
        assert!(Bitmap::from_bytes(&[0, 2], 9).is_none(), "bit 9 beyond len");
        assert!(Bitmap::from_bytes(&[0, 1], 9).is_some());
    }

    #[test]
    fn conversion_keeps_only_fully_present_blocks() {
        // size 10 KiB, 1 KiB blocks: 0..4 present, 5 missing, 6..9 present.
        let mut old = Bitmap::new(10);
        for i in [0, 1, 2, 3, 4, 6, 7, 8, 9] {
            old.set(i);
        }
        let new = convert(&old, 1024, 4096, 10 * 1024);
        // new blocks: [0,4K) ok, [4K,8K) needs old 4..8 → 5 missing, [8K,10K) ok.
        assert_eq!(new.len(), 3);
        assert!(new.get(0) && !new.get(1) && new.get(2));
        // Back to smaller blocks: each small block is present if its big block is.
        let back = convert(&new, 4096, 1024, 10 * 1024);
        let want: Vec<bool> = (0..10).map(|i| !(4..8).contains(&i)).collect();
        let got: Vec<bool> = (0..10).map(|i| back.get(i)).collect();
        assert_eq!(got, want);
    }
}
