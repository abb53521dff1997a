//! The review page in a real browser: `bootstrap predict --review` is run through the real
//! `bootstrap` on the demo buildings, model, tiles and register (what the README's first
//! command does), and the page it wrote is opened in headless chromium (`support::browser`).
//! Checked there: every card's chip decodes at the chip size; each filter shows as many cards
//! as it claims, and claims what the output file says; sorting and keyboard navigation work;
//! a phone-sized window gets two columns and no sideways scrolling; and the page makes no
//! network request, by two witnesses (DevTools' network log of the page, and a proxy that
//! records what the browser sends) that are first shown to catch a page that does.

use std::path::Path;

use serde_json::{Value, json};

use crate::support::batch::{Finished, predict};
use crate::support::browser::{Browser, Recorder};
use crate::support::function::{manifest, ort_library};

/// The demo model's input: every chip is this size.
const CHIP: u64 = 64;

fn demo_env() -> Vec<(String, String)> {
    vec![
        (
            "MODEL_URI".into(),
            manifest("fixtures/models/roof_demo.onnx"),
        ),
        (
            "TILE_URL".into(),
            format!("file://{}", manifest("fixtures/demo-tiles/{z}/{x}/{y}.png")),
        ),
        ("TILE_ZOOM".into(), "19".into()),
        (
            "REGISTRY_URI".into(),
            manifest("fixtures/registry/demo.csv"),
        ),
        ("ORT_DYLIB_PATH".into(), ort_library()),
    ]
}

/// Runs the demo through `bootstrap predict`, writing `out.csv` and `page.html` into `dir`.
fn demo_page(dir: &Path, extra: &[&str]) -> Finished {
    std::fs::copy(
        manifest("fixtures/demo-buildings.csv"),
        dir.join("demo-buildings.csv"),
    )
    .unwrap();
    let mut args = vec![
        "demo-buildings.csv",
        "-o",
        "out.csv",
        "--review",
        "page.html",
    ];
    args.extend_from_slice(extra);
    let run = predict(dir, &args, &demo_env());
    assert_eq!(run.code, 0, "{}", run.stderr);
    run
}

/// What each filter should count, read from the output CSV (not from the page).
fn expected_counts(out: &Path) -> Vec<(String, u64)> {
    let mut reader = csv::Reader::from_path(out).unwrap();
    let header = reader.headers().unwrap().clone();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let (label, listed, code) = (col("label"), col("registry_listed"), col("error_code"));
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let count =
        |f: &dyn Fn(&csv::StringRecord) -> bool| rows.iter().filter(|r| f(r)).count() as u64;
    vec![
        ("all".into(), rows.len() as u64),
        ("label-0".into(), count(&|r| &r[label] == "other")),
        ("label-1".into(), count(&|r| &r[label] == "asbestos")),
        (
            "flagged-unlisted".into(),
            count(&|r| &r[label] == "asbestos" && &r[listed] == "false"),
        ),
        (
            "listed-not-flagged".into(),
            count(&|r| &r[label] == "other" && &r[listed] == "true"),
        ),
        ("errors".into(), count(&|r| !r[code].is_empty())),
    ]
}

/// For each filter button, clicked in turn: (key, the count it shows, the cards then visible).
const FILTERS: &str = "
    return Array.from(document.querySelectorAll('[data-filter]')).map((b) => {
      b.click();
      const shown = Array.from(document.querySelectorAll('.card'))
        .filter((c) => c.offsetParent !== null).length;
      return [b.dataset.filter, Number(b.querySelector('.count').textContent), shown];
    });";

/// Every card image, decoded: [naturalWidth, naturalHeight], or the decoding error.
const DECODE: &str = "
    const done = arguments[arguments.length - 1];
    const images = Array.from(document.querySelectorAll('.card img'));
    Promise.all(images.map((i) => i.decode().then(
      () => [i.naturalWidth, i.naturalHeight], (e) => String(e)))).then(done);";

fn file_url(path: &Path) -> String {
    format!("file://{}", path.display())
}

#[test]
fn the_review_page_works_in_a_real_browser_and_makes_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let run = demo_page(dir.path(), &[]);
    assert!(
        run.stderr
            .contains("review page: page.html (19 cards of 19 buildings)"),
        "{}",
        run.stderr
    );
    let recorder = Recorder::start();
    let browser = Browser::start(&recorder);

    // The witnesses first: a page that does reach out is caught by both.
    let control = dir.path().join("control.html");
    std::fs::write(
        &control,
        "<!doctype html><img src=\"http://192.0.2.1/chip.jpg\">\
         <link rel=\"stylesheet\" href=\"https://fonts.example.org/f.css\">\
         <script>fetch('http://127.0.0.1:9/x').catch(() => {})</script>",
    )
    .unwrap();
    browser.goto(&file_url(&control));
    wait_for(|| !recorder.requests().is_empty());
    assert!(
        recorder.requests().iter().any(|r| r.contains("192.0.2.1")),
        "{:?}",
        recorder.requests()
    );
    let seen = browser.requested_urls();
    assert!(
        seen.iter().any(|u| u == "http://192.0.2.1/chip.jpg"),
        "{seen:?}"
    );
    let before = recorder.requests().len();

    let page = dir.path().join("page.html");
    browser.goto(&file_url(&page));
    assert_eq!(
        browser.run("return document.readyState", json!([])),
        "complete"
    );
    let images = browser.run_async(DECODE);
    let sizes = images.as_array().unwrap();
    let expected = expected_counts(&dir.path().join("out.csv"));
    let predicted = expected[1].1 + expected[2].1;
    assert_eq!(
        sizes.len() as u64,
        predicted,
        "a chip per prediction: {images}"
    );
    for size in sizes {
        assert_eq!(size, &json!([CHIP, CHIP]), "{images}");
    }

    let filters = browser.run(FILTERS, json!([]));
    let claims: Vec<(String, u64)> = filters
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            assert_eq!(
                f[1], f[2],
                "the {} filter shows as many cards as it claims",
                f[0]
            );
            (f[0].as_str().unwrap().to_string(), f[1].as_u64().unwrap())
        })
        .collect();
    assert_eq!(claims, expected);
    assert!(
        expected.iter().all(|(_, n)| *n > 0),
        "the demo has a card for every filter: {expected:?}"
    );

    // Keyboard: `1` is all, Home the first card, → the next, End the last, Enter enlarges,
    // `s` sorts by score, lowest first; a digit picks a filter.
    browser.keys(&["1", "\u{E011}"]);
    let focused = "return [document.activeElement.dataset.order, \
        Array.from(document.getElementById('cards').children).filter((c) => !c.hidden)\
        .map((c) => c.dataset.order)]";
    let state = browser.run(focused, json!([]));
    let order: Vec<&Value> = state[1].as_array().unwrap().iter().collect();
    assert_eq!(&state[0], order[0]);
    browser.keys(&["\u{E014}"]);
    assert_eq!(&browser.run(focused, json!([]))[0], order[1]);
    browser.keys(&["\u{E010}", "\u{E007}"]);
    let last = browser.run(
        "return [document.activeElement.dataset.order, document.activeElement.classList.contains('big')]",
        json!([]),
    );
    assert_eq!((&last[0], &last[1]), (*order.last().unwrap(), &json!(true)));
    browser.keys(&["s"]);
    let scores = browser.run(
        "return Array.from(document.getElementById('cards').children)\
         .map((c) => c.dataset.score).filter((s) => s !== '').map(Number)",
        json!([]),
    );
    let scores: Vec<f64> = serde_json::from_value(scores).unwrap();
    assert!(
        scores.windows(2).all(|w| w[0] <= w[1]),
        "lowest first: {scores:?}"
    );
    browser.keys(&["6"]);
    let errors = browser.run(
        "return [document.querySelector('[data-filter=errors]').getAttribute('aria-pressed'), \
         document.querySelectorAll('.card:not([hidden])').length]",
        json!([]),
    );
    assert_eq!(errors, json!(["true", expected[5].1]));

    // A phone: two columns, nothing wider than the screen.
    browser.window(390, 844);
    let layout = browser.run(
        "const cards = Array.from(document.querySelectorAll('.card')).filter((c) => !c.hidden);\
         return [window.innerWidth, document.documentElement.scrollWidth,\
                 cards[0].offsetTop === cards[1].offsetTop, cards[1].offsetTop === cards[2].offsetTop]",
        json!([]),
    );
    let inner = layout[0].as_u64().unwrap();
    assert!(inner <= 420, "a phone-sized window: {layout}");
    assert!(
        layout[1].as_u64().unwrap() <= inner,
        "no sideways scroll: {layout}"
    );
    assert_eq!(
        (&layout[2], &layout[3]),
        (&json!(true), &json!(false)),
        "two columns: {layout}"
    );

    // The screenshot the README shows: the page as it opens, on a laptop-sized window.
    browser.window(1100, 800);
    browser.goto(&file_url(&page));
    let png = browser.screenshot();
    let shot = image::load_from_memory(&png).unwrap();
    assert!(shot.width() >= 1000, "{}", shot.width());
    std::fs::write(
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("review-page.png"),
        &png,
    )
    .unwrap();
    if let Ok(path) = std::env::var("REVIEW_SCREENSHOT") {
        std::fs::write(path, &png).unwrap();
    }

    // Nothing left the page: DevTools saw only the page itself, the proxy nothing new.
    let urls = browser.requested_urls();
    assert!(
        urls.iter().any(|u| *u == file_url(&page)),
        "the log saw the page: {urls:?}"
    );
    for url in &urls {
        assert!(
            url.starts_with("file://") || url.starts_with("data:"),
            "a request: {url}"
        );
    }
    assert_eq!(
        recorder.requests().len(),
        before,
        "{:?}",
        recorder.requests()
    );
    let console = browser.console();
    assert!(
        !console.iter().any(|m| m.contains("page.html")),
        "the page logged: {console:?}"
    );
}

/// A capped page says so, and its filters still show what they claim, with the run's totals.
#[test]
fn a_capped_page_says_how_its_cards_were_chosen() {
    let dir = tempfile::tempdir().unwrap();
    let run = demo_page(dir.path(), &["--review-limit", "5"]);
    assert!(
        run.stderr.contains("(5 cards of 19 buildings)"),
        "{}",
        run.stderr
    );
    let recorder = Recorder::start();
    let browser = Browser::start(&recorder);
    browser.goto(&file_url(&dir.path().join("page.html")));
    let cap = browser.run(
        "return document.getElementById('cap').textContent",
        json!([]),
    );
    assert!(
        cap.as_str()
            .unwrap()
            .starts_with("Showing 5 of 19 buildings (--review-limit 5)"),
        "{cap}"
    );
    let filters = browser.run(FILTERS, json!([]));
    for f in filters.as_array().unwrap() {
        assert_eq!(
            f[1], f[2],
            "the {} filter shows as many cards as it claims",
            f[0]
        );
    }
    // Five groups share the five cards, one each: the labels agreeing with the register,
    // the two disagreements (whose cards also count under their labels), the errors.
    let shown: Vec<u64> = filters
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f[1].as_u64().unwrap())
        .collect();
    assert_eq!(shown, [5, 2, 2, 1, 1, 1], "{filters}");
    assert!(recorder.requests().is_empty(), "{:?}", recorder.requests());
}

fn wait_for(done: impl Fn() -> bool) {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !done() {
        assert!(std::time::Instant::now() < end, "the condition never held");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
