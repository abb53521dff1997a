//! The parts of an ONNX file that ONNX Runtime's API does not show, read straight from its
//! protobuf bytes: which operator produced each graph output (so `OUTPUT_KIND=auto` can tell a
//! `Softmax` head from raw logits), the metadata (`metadata_props`), the producer and the
//! opsets. And the one edit the metadata tool makes: set or remove `metadata_props` entries.
//!
//! Why a hand-written reader and not a protobuf crate: it reads five small messages (ModelProto,
//! GraphProto, NodeProto, OperatorSetIdProto, StringStringEntryProto) and skips everything else,
//! weights included, by their length prefix, so a 45 MB model is read in well under a
//! millisecond without copying a weight. A generated ONNX binding brings a protobuf runtime and
//! the whole schema into the Lambda binary for these few fields (docs/PERFORMANCE.md, "Reading
//! the ONNX graph"). The wire format is stable and small: varints, fixed 32/64-bit values and
//! length-delimited fields, in any order, repeated fields appended. The tests check this reader
//! against ONNX Runtime's own reading of the same files (names, metadata) and against files
//! written by the Python `onnx` package.

use std::collections::HashMap;
use std::ops::Range;

/// A file this reader cannot make sense of (ONNX Runtime will usually refuse it too).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a readable ONNX protobuf: {0}")]
pub struct GraphError(String);

/// One node of the main graph: what the tracing of an output needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub op_type: String,
    /// `""` for the standard ONNX operators, else e.g. `com.microsoft`.
    pub domain: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

/// What the file says about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Graph {
    /// `producer_name` and `producer_version`, e.g. `pytorch 2.5.1` or `tf2onnx 1.16.1`.
    pub producer: String,
    /// (domain, version) of every opset the model imports (`""` is the standard one).
    pub opsets: Vec<(String, i64)>,
    pub nodes: Vec<Node>,
    /// The main graph's output names, in order.
    pub outputs: Vec<String>,
    /// `metadata_props`, in file order (a repeated key: the last one counts, as in ONNX Runtime).
    pub metadata: Vec<(String, String)>,
}

/// The operator an output comes from, and the shape-only operators looked through on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Producer {
    /// The producing operator (`Softmax`, `Sigmoid`, `Gemm`, …); `None` when the output is a
    /// graph input or a constant.
    pub op: Option<String>,
    /// Operators between it and the output that do not change what the numbers mean
    /// (`Flatten`, `Reshape`, `Cast`, `DequantizeLinear`, …), nearest the output first.
    pub through: Vec<String>,
}

/// Operators that move, cast or (de)quantize values without changing what they mean: a
/// `Softmax` followed by a `Flatten` or a `DequantizeLinear` still answers probabilities.
const PASS_THROUGH: [&str; 10] = [
    "Identity",
    "Reshape",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Cast",
    "Dropout",
    "QuantizeLinear",
    "DequantizeLinear",
    "Transpose",
];

/// Field numbers from onnx.proto3 (stable since ONNX 1.0).
mod field {
    pub const MODEL_PRODUCER_NAME: u32 = 2;
    pub const MODEL_PRODUCER_VERSION: u32 = 3;
    pub const MODEL_GRAPH: u32 = 7;
    pub const MODEL_OPSET_IMPORT: u32 = 8;
    pub const MODEL_METADATA_PROPS: u32 = 14;
    pub const GRAPH_NODE: u32 = 1;
    pub const GRAPH_OUTPUT: u32 = 12;
    pub const NODE_INPUT: u32 = 1;
    pub const NODE_OUTPUT: u32 = 2;
    pub const NODE_OP_TYPE: u32 = 4;
    pub const NODE_DOMAIN: u32 = 7;
    pub const VALUE_INFO_NAME: u32 = 1;
    pub const OPSET_DOMAIN: u32 = 1;
    pub const OPSET_VERSION: u32 = 2;
    pub const ENTRY_KEY: u32 = 1;
    pub const ENTRY_VALUE: u32 = 2;
}

impl Graph {
    /// Reads `bytes` (a serialised `ModelProto`).
    pub fn parse(bytes: &[u8]) -> Result<Self, GraphError> {
        let mut graph = Graph::default();
        let (mut name, mut version) = (String::new(), String::new());
        let mut saw_graph = false;
        for f in Fields::new(bytes) {
            let f = f?;
            match (f.number, f.value) {
                (field::MODEL_PRODUCER_NAME, Value::Bytes(b)) => name = text(b)?,
                (field::MODEL_PRODUCER_VERSION, Value::Bytes(b)) => version = text(b)?,
                (field::MODEL_OPSET_IMPORT, Value::Bytes(b)) => graph.opsets.push(opset(b)?),
                (field::MODEL_METADATA_PROPS, Value::Bytes(b)) => graph.metadata.push(entry(b)?),
                (field::MODEL_GRAPH, Value::Bytes(b)) => {
                    saw_graph = true;
                    read_graph(b, &mut graph)?;
                }
                _ => {}
            }
        }
        if !saw_graph {
            return Err(GraphError("the file has no graph".into()));
        }
        graph.producer = format!("{name} {version}").trim().to_string();
        Ok(graph)
    }

    /// The last value of metadata key `key`.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The operator behind graph output `output`, looking through [`PASS_THROUGH`] operators
    /// (each followed along its first input).
    pub fn producer_of(&self, output: &str) -> Producer {
        let made_by: HashMap<&str, &Node> = self
            .nodes
            .iter()
            .flat_map(|n| n.outputs.iter().map(move |o| (o.as_str(), n)))
            .collect();
        let mut through = Vec::new();
        let mut name = output;
        // Bounded by the node count: a (malformed) cycle cannot loop forever.
        for _ in 0..=self.nodes.len() {
            let Some(node) = made_by.get(name) else {
                break;
            };
            let standard = node.domain.is_empty() || node.domain == "ai.onnx";
            if standard
                && PASS_THROUGH.contains(&node.op_type.as_str())
                && let Some(first) = node.inputs.first()
            {
                through.push(node.op_type.clone());
                name = first;
                continue;
            }
            return Producer {
                op: Some(node.op_type.clone()),
                through,
            };
        }
        Producer { op: None, through }
    }
}

/// `bytes` with metadata entries set: every existing entry whose key is in `set` is dropped,
/// then each `(key, value)` with a non-empty value is appended. An empty value removes the key.
/// Everything else in the file is copied byte for byte.
pub fn with_metadata(bytes: &[u8], set: &[(String, String)]) -> Result<Vec<u8>, GraphError> {
    Graph::parse(bytes)?;
    let mut out = Vec::with_capacity(bytes.len() + 64 * set.len());
    for f in Fields::new(bytes) {
        let f = f?;
        if let (field::MODEL_METADATA_PROPS, Value::Bytes(b)) = (f.number, &f.value) {
            let (key, _) = entry(b)?;
            if set.iter().any(|(k, _)| *k == key) {
                continue;
            }
        }
        out.extend_from_slice(&bytes[f.span]);
    }
    for (key, value) in set.iter().filter(|(_, v)| !v.is_empty()) {
        let mut message = Vec::new();
        put_bytes(&mut message, field::ENTRY_KEY, key.as_bytes());
        put_bytes(&mut message, field::ENTRY_VALUE, value.as_bytes());
        put_bytes(&mut out, field::MODEL_METADATA_PROPS, &message);
    }
    Ok(out)
}

fn read_graph(bytes: &[u8], graph: &mut Graph) -> Result<(), GraphError> {
    for f in Fields::new(bytes) {
        let f = f?;
        match (f.number, f.value) {
            (field::GRAPH_NODE, Value::Bytes(b)) => graph.nodes.push(node(b)?),
            (field::GRAPH_OUTPUT, Value::Bytes(b)) => {
                let mut name = String::new();
                for f in Fields::new(b) {
                    if let (field::VALUE_INFO_NAME, Value::Bytes(b)) = f?.split() {
                        name = text(b)?;
                    }
                }
                graph.outputs.push(name);
            }
            _ => {}
        }
    }
    Ok(())
}

fn node(bytes: &[u8]) -> Result<Node, GraphError> {
    let mut node = Node {
        op_type: String::new(),
        domain: String::new(),
        inputs: Vec::new(),
        outputs: Vec::new(),
    };
    for f in Fields::new(bytes) {
        let f = f?;
        let Value::Bytes(b) = f.value else { continue };
        match f.number {
            field::NODE_INPUT => node.inputs.push(text(b)?),
            field::NODE_OUTPUT => node.outputs.push(text(b)?),
            field::NODE_OP_TYPE => node.op_type = text(b)?,
            field::NODE_DOMAIN => node.domain = text(b)?,
            _ => {}
        }
    }
    Ok(node)
}

fn opset(bytes: &[u8]) -> Result<(String, i64), GraphError> {
    let (mut domain, mut version) = (String::new(), 0);
    for f in Fields::new(bytes) {
        match f?.split() {
            (field::OPSET_DOMAIN, Value::Bytes(b)) => domain = text(b)?,
            (field::OPSET_VERSION, Value::Varint(v)) => version = v as i64,
            _ => {}
        }
    }
    Ok((domain, version))
}

fn entry(bytes: &[u8]) -> Result<(String, String), GraphError> {
    let (mut key, mut value) = (String::new(), String::new());
    for f in Fields::new(bytes) {
        match f?.split() {
            (field::ENTRY_KEY, Value::Bytes(b)) => key = text(b)?,
            (field::ENTRY_VALUE, Value::Bytes(b)) => value = text(b)?,
            _ => {}
        }
    }
    Ok((key, value))
}

fn text(bytes: &[u8]) -> Result<String, GraphError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| GraphError("a string field is not UTF-8".into()))
}

/// One field's payload. Fixed-width values are skipped: nothing read here has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldRef<'a> {
    number: u32,
    value: Value<'a>,
    /// The whole field (key included) in the message's bytes.
    span: Range<usize>,
}

impl<'a> FieldRef<'a> {
    fn split(self) -> (u32, Value<'a>) {
        (self.number, self.value)
    }
}

/// The fields of one message, in order.
struct Fields<'a> {
    bytes: &'a [u8],
    at: usize,
    failed: bool,
}

impl<'a> Fields<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            at: 0,
            failed: false,
        }
    }

    fn varint(&mut self) -> Result<u64, GraphError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&byte) = self.bytes.get(self.at) else {
                return Err(GraphError(format!("truncated varint at byte {}", self.at)));
            };
            self.at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(GraphError(format!("varint too long at byte {}", self.at)))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], GraphError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| {
                GraphError(format!(
                    "a field of {n} bytes at byte {} runs past the end ({} bytes)",
                    self.at,
                    self.bytes.len()
                ))
            })?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn field(&mut self) -> Result<FieldRef<'a>, GraphError> {
        let start = self.at;
        let key = self.varint()?;
        let number = u32::try_from(key >> 3)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| GraphError(format!("bad field number at byte {start}")))?;
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Value::Fixed
            }
            2 => {
                let len = usize::try_from(self.varint()?)
                    .map_err(|_| GraphError(format!("bad length at byte {start}")))?;
                Value::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Value::Fixed
            }
            other => {
                return Err(GraphError(format!(
                    "wire type {other} at byte {start} (groups are not used by ONNX)"
                )));
            }
        };
        Ok(FieldRef {
            number,
            value,
            span: start..self.at,
        })
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<FieldRef<'a>, GraphError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.at >= self.bytes.len() {
            return None;
        }
        let field = self.field();
        self.failed = field.is_err();
        Some(field)
    }
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_bytes(out: &mut Vec<u8>, number: u32, bytes: &[u8]) {
    put_varint(out, (u64::from(number) << 3) | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(fields: &[(u32, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (number, bytes) in fields {
            put_bytes(&mut out, *number, bytes);
        }
        out
    }

    fn node_bytes(op: &str, inputs: &[&str], outputs: &[&str]) -> Vec<u8> {
        let mut fields: Vec<(u32, &[u8])> = inputs.iter().map(|i| (1, i.as_bytes())).collect();
        fields.extend(outputs.iter().map(|o| (2, o.as_bytes())));
        fields.push((4, op.as_bytes()));
        message(&fields)
    }

    /// A ModelProto by hand: ir_version first (a varint), a weight-like blob, the graph.
    fn model(nodes: &[Vec<u8>], outputs: &[&str], metadata: &[(&str, &str)]) -> Vec<u8> {
        let mut graph = Vec::new();
        for n in nodes {
            put_bytes(&mut graph, 1, n);
        }
        put_bytes(&mut graph, 5, &[0u8; 300]); // an initializer, skipped
        for o in outputs {
            put_bytes(&mut graph, 12, &message(&[(1, o.as_bytes())]));
        }
        let mut out = vec![0x08, 0x08]; // ir_version = 8
        put_bytes(&mut out, 2, b"pytorch");
        put_bytes(&mut out, 3, b"2.5.1");
        let mut opset = Vec::new();
        put_bytes(&mut opset, 1, b"");
        opset.extend([0x10, 17]); // version = 17
        put_bytes(&mut out, 8, &opset);
        put_bytes(&mut out, 7, &graph);
        for (k, v) in metadata {
            put_bytes(
                &mut out,
                14,
                &message(&[(1, k.as_bytes()), (2, v.as_bytes())]),
            );
        }
        out
    }

    #[test]
    fn reads_nodes_outputs_metadata_producer_and_opsets() {
        let bytes = model(
            &[node_bytes("Gemm", &["x", "W"], &["logits"])],
            &["logits"],
            &[("labels", "other,asbestos")],
        );
        let graph = Graph::parse(&bytes).unwrap();
        assert_eq!(graph.producer, "pytorch 2.5.1");
        assert_eq!(graph.opsets, vec![(String::new(), 17)]);
        assert_eq!(graph.outputs, vec!["logits"]);
        assert_eq!(graph.nodes[0].op_type, "Gemm");
        assert_eq!(graph.nodes[0].inputs, vec!["x", "W"]);
        assert_eq!(graph.metadata("labels"), Some("other,asbestos"));
    }

    #[test]
    fn traces_an_output_through_shape_only_operators() {
        let bytes = model(
            &[
                node_bytes("Gemm", &["x"], &["z"]),
                node_bytes("Softmax", &["z"], &["p"]),
                node_bytes("Flatten", &["p"], &["flat"]),
                node_bytes("Identity", &["flat"], &["probs"]),
                node_bytes("Relu", &["z"], &["features"]),
            ],
            &["probs", "features", "x"],
            &[],
        );
        let graph = Graph::parse(&bytes).unwrap();
        assert_eq!(
            graph.producer_of("probs"),
            Producer {
                op: Some("Softmax".into()),
                through: vec!["Identity".into(), "Flatten".into()],
            }
        );
        assert_eq!(graph.producer_of("features").op.as_deref(), Some("Relu"));
        assert_eq!(graph.producer_of("x").op, None);
    }

    #[test]
    fn a_cycle_of_pass_through_nodes_ends() {
        let bytes = model(
            &[
                node_bytes("Identity", &["b"], &["a"]),
                node_bytes("Identity", &["a"], &["b"]),
            ],
            &["a"],
            &[],
        );
        assert_eq!(Graph::parse(&bytes).unwrap().producer_of("a").op, None);
    }

    #[test]
    fn metadata_is_replaced_removed_and_added_and_the_rest_kept() {
        let bytes = model(
            &[node_bytes("Gemm", &["x"], &["y"])],
            &["y"],
            &[("labels", "a,b"), ("author", "me"), ("labels", "c,d")],
        );
        let edited = with_metadata(
            &bytes,
            &[
                ("labels".into(), "other,asbestos".into()),
                ("author".into(), String::new()),
                ("output_kind".into(), "sigmoid".into()),
            ],
        )
        .unwrap();
        let graph = Graph::parse(&edited).unwrap();
        assert_eq!(
            graph.metadata,
            vec![
                ("labels".to_string(), "other,asbestos".to_string()),
                ("output_kind".to_string(), "sigmoid".to_string()),
            ]
        );
        assert_eq!(graph.nodes, Graph::parse(&bytes).unwrap().nodes);
        // Unchanged fields are copied byte for byte: the edit only appends.
        let plain = with_metadata(&bytes, &[]).unwrap();
        assert_eq!(plain, bytes);
    }

    #[test]
    fn broken_bytes_are_errors_not_panics() {
        let bytes = model(&[node_bytes("Gemm", &["x"], &["y"])], &["y"], &[]);
        for cut in [1, 5, bytes.len() / 2, bytes.len() - 1] {
            assert!(Graph::parse(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert!(Graph::parse(b"not a model at all").is_err());
        assert!(Graph::parse(&[]).is_err());
        assert!(Graph::parse(&[0xff; 12]).is_err());
        // A length near u64::MAX must not overflow.
        let mut huge = vec![0x3a];
        put_varint(&mut huge, u64::MAX - 3);
        assert!(Graph::parse(&huge).is_err());
    }
}
