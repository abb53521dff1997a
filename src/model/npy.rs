//! Input batches as NumPy `.npy` files (format 1.0): what `bootstrap chips` writes, so a
//! quantizer calibrates on exactly the tensors the function feeds, and what `bootstrap compare`
//! reads back. `numpy.load` reads these files and `numpy.save` writes files this reads
//! (C order, little-endian `float32`, `float16` or `uint8`, four dimensions).

use std::io::{self, Write};

use half::f16;
use ndarray::{Array4, s};

use super::input::InputBatch;

const MAGIC: &[u8] = b"\x93NUMPY";

/// Writes a header for `rows` rows shaped like `sample`'s, then rows batch by batch: the file
/// is made without holding every chip's tensor at once.
pub struct Writer<W: Write> {
    out: W,
    left: usize,
}

impl<W: Write> Writer<W> {
    /// `sample` gives the element type and the row shape; `rows` is the total to come.
    pub fn new(mut out: W, sample: &InputBatch, rows: usize) -> io::Result<Self> {
        let (descr, dims) = describe(sample);
        let shape = format!("({rows}, {}, {}, {})", dims[1], dims[2], dims[3]);
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        // Magic (6) + version (2) + length (2) + header + '\n' is a multiple of 64.
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        out.write_all(MAGIC)?;
        out.write_all(&[1, 0])?;
        out.write_all(&(header.len() as u16).to_le_bytes())?;
        out.write_all(header.as_bytes())?;
        Ok(Self { out, left: rows })
    }

    /// Appends the first `rows` rows of `batch`.
    pub fn rows(&mut self, batch: &InputBatch, rows: usize) -> io::Result<()> {
        if rows > self.left || rows > batch.rows() {
            return Err(io::Error::other("more rows than the header announced"));
        }
        self.left -= rows;
        match batch {
            InputBatch::Float32(a) => {
                for v in a.slice(s![..rows, .., .., ..]).iter() {
                    self.out.write_all(&v.to_le_bytes())?;
                }
            }
            InputBatch::Float16(a) => {
                for v in a.slice(s![..rows, .., .., ..]).iter() {
                    self.out.write_all(&v.to_le_bytes())?;
                }
            }
            InputBatch::Uint8(a) => {
                let part = a.slice(s![..rows, .., .., ..]);
                self.out
                    .write_all(part.as_slice().expect("a standard-layout slice"))?;
            }
        }
        Ok(())
    }

    /// Checks every announced row was written and flushes.
    pub fn finish(mut self) -> io::Result<()> {
        if self.left != 0 {
            return Err(io::Error::other(format!(
                "{} announced rows were not written",
                self.left
            )));
        }
        self.out.flush()
    }
}

fn describe(batch: &InputBatch) -> (&'static str, Vec<usize>) {
    match batch {
        InputBatch::Float32(a) => ("<f4", a.shape().to_vec()),
        InputBatch::Float16(a) => ("<f2", a.shape().to_vec()),
        InputBatch::Uint8(a) => ("|u1", a.shape().to_vec()),
    }
}

/// Reads a 4-D `.npy` file into a batch.
pub fn read(bytes: &[u8]) -> Result<InputBatch, String> {
    if !bytes.starts_with(MAGIC) || bytes.len() < 10 {
        return Err("not a .npy file".into());
    }
    let (len, start) = match bytes[6] {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(format!(".npy format version {v} is not supported")),
    };
    let header = bytes
        .get(start..start + len)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or("the .npy header is cut short or not text")?;
    let data = &bytes[start + len..];
    let quoted = |key: &str| {
        let at = header.find(&format!("'{key}':"))? + key.len() + 3;
        Some(header[at..].trim_start())
    };
    let descr = quoted("descr")
        .and_then(|v| v.strip_prefix('\''))
        .and_then(|v| v.split('\'').next())
        .ok_or("the .npy header has no descr")?;
    if quoted("fortran_order").is_some_and(|v| v.starts_with("True")) {
        return Err("a Fortran-order .npy file: save it in C order".into());
    }
    let shape: Vec<usize> = quoted("shape")
        .and_then(|v| v.strip_prefix('('))
        .and_then(|v| v.split(')').next())
        .ok_or("the .npy header has no shape")?
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| {
            d.parse::<usize>()
                .map_err(|_| format!("bad .npy dimension {d:?}"))
        })
        .collect::<Result<_, _>>()?;
    let [n, a, b, c] = shape[..] else {
        return Err(format!("expected a 4-D batch, the file holds {shape:?}"));
    };
    let count = n * a * b * c;
    let size = match descr {
        "<f4" => 4,
        "<f2" => 2,
        "|u1" | "<u1" => 1,
        other => {
            return Err(format!(
                "element type {other} is not float32, float16 or uint8"
            ));
        }
    };
    if data.len() != count * size {
        return Err(format!(
            "the .npy data is {} bytes; its shape {shape:?} needs {}",
            data.len(),
            count * size
        ));
    }
    let dims = (n, a, b, c);
    let array = |values| Array4::from_shape_vec(dims, values).map_err(|e| e.to_string());
    Ok(match size {
        4 => InputBatch::Float32(array(
            data.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        )?),
        2 => InputBatch::Float16(
            Array4::from_shape_vec(
                dims,
                data.chunks_exact(2)
                    .map(|b| f16::from_le_bytes([b[0], b[1]]))
                    .collect(),
            )
            .map_err(|e| e.to_string())?,
        ),
        _ => InputBatch::Uint8(
            Array4::from_shape_vec(dims, data.to_vec()).map_err(|e| e.to_string())?,
        ),
    })
}

impl InputBatch {
    /// Rows `from..from + count` as a batch of `rows` rows (zero rows after them: a fixed
    /// batch dimension's padding).
    pub fn slice_rows(&self, from: usize, count: usize, rows: usize) -> InputBatch {
        fn part<T: Clone + Default>(
            a: &Array4<T>,
            from: usize,
            count: usize,
            rows: usize,
        ) -> Array4<T> {
            let mut shape = a.raw_dim();
            shape[0] = rows;
            let mut out = Array4::<T>::default(shape);
            out.slice_mut(s![..count, .., .., ..]).assign(&a.slice(s![
                from..from + count,
                ..,
                ..,
                ..
            ]));
            out
        }
        match self {
            Self::Float32(a) => Self::Float32(part(a, from, count, rows)),
            Self::Float16(a) => Self::Float16(part(a, from, count, rows)),
            Self::Uint8(a) => Self::Uint8(part(a, from, count, rows)),
        }
    }

    /// The shape of one row (`[3,H,W]` or `[H,W,3]`).
    pub fn row_shape(&self) -> Vec<usize> {
        let shape = match self {
            Self::Float32(a) => a.shape().to_vec(),
            Self::Float16(a) => a.shape().to_vec(),
            Self::Uint8(a) => a.shape().to_vec(),
        };
        shape[1..].to_vec()
    }

    /// True when both hold the same element type.
    pub fn same_type(&self, other: &InputBatch) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(batch: &InputBatch) -> InputBatch {
        let mut bytes = Vec::new();
        let mut w = Writer::new(&mut bytes, batch, batch.rows()).unwrap();
        w.rows(batch, batch.rows()).unwrap();
        w.finish().unwrap();
        assert_eq!(
            (bytes.len() - batch_bytes(batch)) % 64,
            0,
            "the header is 64-aligned"
        );
        read(&bytes).unwrap()
    }

    fn batch_bytes(batch: &InputBatch) -> usize {
        match batch {
            InputBatch::Float32(a) => a.len() * 4,
            InputBatch::Float16(a) => a.len() * 2,
            InputBatch::Uint8(a) => a.len(),
        }
    }

    #[test]
    fn every_element_type_survives_a_round_trip() {
        let f = Array4::from_shape_fn((2, 3, 2, 2), |(n, c, y, x)| {
            (n * 100 + c * 10 + y * 2 + x) as f32 / 7.0
        });
        for batch in [
            InputBatch::Float32(f.clone()),
            InputBatch::Float16(f.mapv(f16::from_f32)),
            InputBatch::Uint8(f.mapv(|v| (v * 3.0) as u8)),
        ] {
            assert_eq!(round_trip(&batch), batch);
        }
    }

    #[test]
    fn reads_what_numpy_writes() {
        // numpy.save(f, numpy.arange(6, dtype="<f4").reshape(1, 1, 2, 3)), format 1.0.
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 2, 3), }";
        let mut bytes = MAGIC.to_vec();
        bytes.extend([1, 0]);
        let padded = format!("{header:<117}\n");
        bytes.extend((padded.len() as u16).to_le_bytes());
        bytes.extend(padded.as_bytes());
        for v in 0..6 {
            bytes.extend((v as f32).to_le_bytes());
        }
        let InputBatch::Float32(a) = read(&bytes).unwrap() else {
            panic!("float32 expected")
        };
        assert_eq!(a.shape(), &[1, 1, 2, 3]);
        assert_eq!(a[[0, 0, 1, 2]], 5.0);
    }

    #[test]
    fn bad_files_are_errors() {
        assert!(read(b"PK\x03\x04").is_err());
        let batch = InputBatch::Uint8(Array4::zeros((1, 3, 2, 2)));
        let mut bytes = Vec::new();
        let mut w = Writer::new(&mut bytes, &batch, 2).unwrap();
        w.rows(&batch, 1).unwrap();
        assert!(w.finish().is_err(), "fewer rows than announced");
        let err = read(&bytes).unwrap_err();
        assert!(err.contains("needs 24"), "{err}");
    }

    #[test]
    fn rows_are_sliced_and_padded() {
        let a = Array4::from_shape_fn((3, 1, 1, 1), |(n, ..)| n as f32 + 1.0);
        let part = InputBatch::Float32(a).slice_rows(1, 2, 4);
        let InputBatch::Float32(p) = part else {
            panic!()
        };
        assert_eq!(
            p.iter().copied().collect::<Vec<_>>(),
            vec![2.0, 3.0, 0.0, 0.0]
        );
    }
}
