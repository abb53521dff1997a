//! The hand-written ONNX reader (`model::graph`) against ONNX Runtime's own reading of the same
//! files, in-process: for every fixture model (written by Python's `onnx`), the graph outputs
//! and the metadata must be what ONNX Runtime reports, and a metadata edit must load in ONNX
//! Runtime with the new values and the same answers.

use tilepredict::model::graph::{Graph, with_metadata};
use tilepredict::model::session;
use tilepredict::model::settings::ModelSettings;
use tilepredict::model::{Model, ModelOptions, onnx_runtime};

use crate::support::function::{manifest, ort_library};

fn fixtures() -> Vec<std::path::PathBuf> {
    let mut paths: Vec<_> = std::fs::read_dir(manifest("fixtures/models"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 20, "{paths:?}");
    paths
}

fn ort_view(bytes: &[u8]) -> (Vec<String>, Vec<(String, String)>) {
    let env = onnx_runtime(ort_library().as_ref()).unwrap();
    let s = session::build(env, bytes, 1).unwrap();
    let outputs = s.outputs().iter().map(|o| o.name().to_string()).collect();
    let meta = s.metadata().unwrap();
    let mut metadata: Vec<(String, String)> = meta
        .custom_keys()
        .unwrap()
        .into_iter()
        .map(|k| {
            let v = meta.custom(&k).unwrap();
            (k, v)
        })
        .collect();
    metadata.sort();
    (outputs, metadata)
}

#[test]
fn the_reader_sees_the_outputs_and_metadata_onnx_runtime_sees() {
    for path in fixtures() {
        let bytes = std::fs::read(&path).unwrap();
        let graph = Graph::parse(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let (outputs, metadata) = ort_view(&bytes);
        assert_eq!(graph.outputs, outputs, "{}", path.display());
        let mut ours = graph.metadata.clone();
        ours.sort();
        assert_eq!(ours, metadata, "{}", path.display());
        assert_eq!(graph.producer, "tilepredict-fixtures", "{}", path.display());
        assert_eq!(
            graph.opsets,
            vec![(String::new(), 13)],
            "{}",
            path.display()
        );
    }
}

#[test]
fn an_edited_file_loads_in_onnx_runtime_with_the_new_metadata_and_the_same_answers() {
    let env = onnx_runtime(ort_library().as_ref()).unwrap();
    let options = ModelOptions {
        threads: 1,
        sessions: 1,
        settings: &ModelSettings::default(),
    };
    for name in ["two_outputs.onnx", "caffe_bgr.onnx", "keras_nhwc.onnx"] {
        let bytes = std::fs::read(manifest(&format!("fixtures/models/{name}"))).unwrap();
        let edited = with_metadata(
            &bytes,
            &[
                ("labels".into(), "a,b,c".into()),
                ("note".into(), "ünïcode, = and \"quotes\"".into()),
            ],
        )
        .unwrap();
        let (_, metadata) = ort_view(&edited);
        assert!(
            metadata.contains(&("labels".into(), "a,b,c".into())),
            "{name}: {metadata:?}"
        );
        assert!(
            metadata.contains(&("note".into(), "ünïcode, = and \"quotes\"".into())),
            "{name}"
        );
        // The graph is untouched: the same probe answer (labels aside) from both files.
        let before = Model::new(env, &bytes, &options);
        let after = Model::new(env, &edited, &options);
        match (before, after) {
            (Ok(a), Ok(b)) => assert_eq!(a.probe, b.probe, "{name}"),
            // caffe_bgr and keras_nhwc have two outputs' worth of labels, not three.
            (Ok(_), Err(e)) => assert!(e.contains("labels metadata names 3"), "{name}: {e}"),
            (Err(e), _) => panic!("{name}: {e}"),
        }
    }
}
