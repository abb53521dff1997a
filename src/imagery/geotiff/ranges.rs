//! Which byte ranges a request reads: each internal tile's bytes (and its mask's), merged with
//! their neighbours in the file when the gap between is small, so adjacent tiles (a COG stores a
//! level's tiles row by row) cost one request.

use std::collections::HashMap;
use std::ops::Range;

use crate::imagery::plan::TileBytes;

/// Ranges closer than this are read in one request: a few KiB more is cheaper than a request.
pub const MERGE_GAP: u64 = 16 * 1024;

/// The ranges holding a tile's bytes (its data, and its mask if any); empty tiles have none.
pub fn ranges_of(t: &TileBytes) -> Vec<Range<u64>> {
    std::iter::once(t.data.clone())
        .chain(t.mask.clone())
        .filter(|r| r.end > r.start)
        .collect()
}

/// Groups `members` (indexes into `tiles`, all of one file) into units: ranges closer than
/// [`MERGE_GAP`] are merged (up to `max_request` bytes), and tiles sharing a merged range end
/// up in one unit.
pub fn merge(
    members: &[usize],
    ranges: impl Fn(usize) -> Vec<Range<u64>>,
    max_request: u64,
) -> Vec<(Vec<usize>, Vec<Range<u64>>)> {
    let mut pieces: Vec<(Range<u64>, usize)> = members
        .iter()
        .flat_map(|&i| ranges(i).into_iter().map(move |r| (r, i)))
        .collect();
    pieces.sort_by_key(|(r, _)| (r.start, r.end));
    // Union-find over tiles.
    let mut parent: HashMap<usize, usize> = members.iter().map(|&i| (i, i)).collect();
    fn root(parent: &mut HashMap<usize, usize>, mut i: usize) -> usize {
        while parent[&i] != i {
            let up = parent[&parent[&i]];
            parent.insert(i, up);
            i = up;
        }
        i
    }
    let mut merged: Vec<(Range<u64>, usize)> = Vec::new();
    for (range, tile) in pieces {
        if let Some((last, owner)) = merged.last_mut()
            && range.start <= last.end + MERGE_GAP
            && range.end.max(last.end) - last.start <= max_request
        {
            last.end = last.end.max(range.end);
            let (a, b) = (root(&mut parent, *owner), root(&mut parent, tile));
            parent.insert(a, b);
            *owner = b;
            continue;
        }
        merged.push((range, tile));
    }
    let mut groups: HashMap<usize, (Vec<usize>, Vec<Range<u64>>)> = HashMap::new();
    for &i in members {
        let r = root(&mut parent, i);
        groups.entry(r).or_default().0.push(i);
    }
    for (range, owner) in merged {
        let r = root(&mut parent, owner);
        groups.entry(r).or_default().1.push(range);
    }
    // Tiles with no bytes (sparse files) still need a unit to be delivered (as empty tiles).
    let mut out: Vec<_> = groups.into_values().collect();
    out.sort_by_key(|(images, _)| images.iter().min().copied());
    out
}

#[cfg(test)]
// Each tile has a list of byte ranges (data, then mask); most lists here hold one.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;

    #[test]
    fn adjacent_ranges_merge_and_far_ones_do_not() {
        // Tiles 0..3 back to back (with GDAL's 8-byte leader and trailer between), tile 3 far
        // away, tile 4 whose mask sits right after tile 3's data.
        let ranges = |i: usize| match i {
            0 => vec![100..200],
            1 => vec![208..300],
            2 => vec![308..400],
            3 => vec![1_000_000..1_000_100],
            _ => vec![50_000_000..50_000_010, 1_000_100..1_000_110],
        };
        let mut groups = merge(&[0, 1, 2, 3, 4], ranges, 1 << 20);
        groups.iter_mut().for_each(|g| g.0.sort());
        assert_eq!(
            groups,
            vec![
                (vec![0, 1, 2], vec![100..400]),
                (
                    vec![3, 4],
                    vec![1_000_000..1_000_110, 50_000_000..50_000_010]
                ),
            ]
        );
    }

    #[test]
    fn a_merged_request_stays_within_the_cap() {
        let ranges = |i: usize| vec![i as u64 * 100..i as u64 * 100 + 100];
        let groups = merge(&[0, 1, 2, 3], ranges, 250);
        let sizes: Vec<Vec<u64>> = groups
            .iter()
            .map(|(_, r)| r.iter().map(|r| r.end - r.start).collect())
            .collect();
        assert_eq!(sizes, vec![vec![200], vec![200]]);
    }

    #[test]
    fn empty_tiles_still_get_a_group() {
        let groups = merge(&[7], |_| Vec::new(), 1 << 20);
        assert_eq!(groups, vec![(vec![7], vec![])]);
    }
}
