//! The review page's HTML: written as a stream (a page of a few thousand chips is tens of
//! MB), self-contained (chips as JPEG `data:` URIs, CSS and script inline, system fonts) and
//! locked down by its Content-Security-Policy, which forbids every request but `data:`
//! images, so the page cannot reach the network even if a building's id held markup (every
//! text is escaped as well).

use std::io::{self, Write};

use base64::Engine;

use super::{Card, Group, Selection};

const STYLE: &str = include_str!("page.css");
const SCRIPT: &str = include_str!("page.js");

/// No request of any kind but `data:` images: the page is a file, complete in itself.
pub const CSP: &str =
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'";

/// What the page says about the run besides its cards.
#[derive(Debug, Clone, PartialEq)]
pub struct Context {
    /// The input file, as the user named it.
    pub input: String,
    pub model_uri: String,
    /// The register's URI, when one is configured.
    pub register_uri: Option<String>,
    /// The chips' size in pixels (the model's input).
    pub chip_size: (u32, u32),
    /// Anything else to say (an interrupted or resumed run).
    pub notes: Vec<String>,
}

/// One filter button: the cards it shows, and how many buildings of the run it covers.
struct Filter {
    key: String,
    name: String,
    shown: usize,
    total: usize,
}

/// Writes the page.
pub fn write(out: &mut impl Write, selection: &Selection, context: &Context) -> io::Result<()> {
    let filters = filters(selection);
    let totals = &selection.totals;
    let title = format!(
        "Review of {} — {} buildings",
        context.input,
        thousands(totals.buildings)
    );
    write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\n\
         <title>{}</title>\n<style>\n{STYLE}</style></head>\n<body>\n<header>\n<h1>{}</h1>\n",
        escape(&title),
        escape(&title)
    )?;
    let mut meta = format!(
        "model {} · labels {} · chips {}×{} px, as the model saw them (before normalisation)",
        context.model_uri,
        selection.labels.join(", "),
        context.chip_size.0,
        context.chip_size.1
    );
    if let Some(uri) = &context.register_uri {
        meta.push_str(&format!(" · register {uri}"));
    }
    writeln!(out, "<p class=\"meta\">{}</p>", escape(&meta))?;
    let shown = selection.cards.len();
    let cap = if selection.capped {
        format!(
            "Showing {} of {} buildings (--review-limit {}): the cards are shared between the \
             groups below — each label, the register's disagreements and errors — keeping each \
             group's highest scores (errors: the first in the input).",
            thousands(shown),
            thousands(totals.buildings),
            thousands(selection.limit)
        )
    } else {
        format!("Showing all {} buildings.", thousands(shown))
    };
    writeln!(out, "<p class=\"cap\" id=\"cap\">{}</p>", escape(&cap))?;
    for note in &context.notes {
        writeln!(out, "<p class=\"cap\">{}</p>", escape(note))?;
    }
    writeln!(out, "<nav class=\"filters\" aria-label=\"filters\">")?;
    for (i, f) in filters.iter().enumerate() {
        let of = if f.total != f.shown {
            format!(" <span class=\"of\">of {}</span>", thousands(f.total))
        } else {
            String::new()
        };
        writeln!(
            out,
            "<button type=\"button\" data-filter=\"{}\" aria-pressed=\"{}\" title=\"key {}\">{} \
             <span class=\"count\">{}</span>{of}</button>",
            f.key,
            i == 0,
            i + 1,
            escape(&f.name),
            f.shown
        )?;
    }
    writeln!(
        out,
        "</nav>\n<div class=\"controls\"><label>Sort <select id=\"sort\">\
         <option value=\"score-desc\">score, highest first</option>\
         <option value=\"score-asc\">score, lowest first</option>\
         <option value=\"order\">input order</option></select></label>\
         <span class=\"keys\">Keys: ← → ↑ ↓ move · Enter enlarge · 1–{} filters · s sort</span>\
         </div>\n</header>\n<main id=\"cards\">",
        filters.len().min(9)
    )?;
    for card in &selection.cards {
        write_card(out, card, selection, context.chip_size)?;
    }
    write!(
        out,
        "</main>\n<script>\n{SCRIPT}</script>\n</body></html>\n"
    )
}

fn write_card(
    out: &mut impl Write,
    card: &Card,
    selection: &Selection,
    (width, height): (u32, u32),
) -> io::Result<()> {
    let mut keys = vec!["all".to_string()];
    if let Some(label) = &card.label
        && let Some(i) = selection.labels.iter().position(|l| l == label)
    {
        keys.push(format!("label-{i}"));
    }
    keys.extend(group_key(card.group).map(String::from));
    write!(
        out,
        "<article class=\"card\" tabindex=\"-1\" data-order=\"{}\" data-score=\"{}\" data-f=\" {} \">",
        card.order,
        card.score.map(|s| s.to_string()).unwrap_or_default(),
        keys.join(" ")
    )?;
    match &card.jpeg {
        Some(jpeg) => write!(
            out,
            "<img src=\"data:image/jpeg;base64,{}\" width=\"{width}\" height=\"{height}\" alt=\"chip of {}\">",
            base64::engine::general_purpose::STANDARD.encode(jpeg),
            escape(&card.id)
        )?,
        None => write!(out, "<div class=\"noimg\">no chip</div>")?,
    }
    write!(
        out,
        "<div class=\"body\"><div class=\"id\" title=\"input row {}\">{}</div>",
        card.order + 1,
        escape(&card.id)
    )?;
    if let (Some(label), Some(score)) = (&card.label, card.score) {
        write!(
            out,
            "<div class=\"pred\"><span class=\"label\">{}</span><span class=\"score\">{score:.3}</span></div>",
            escape(label)
        )?;
    }
    if let Some(listing) = &card.listing {
        write!(out, "{}", registry_status(listing))?;
    }
    if let Some(error) = &card.error {
        write!(
            out,
            "<div class=\"err\"><b>{}</b> {}</div>",
            error.code.as_str(),
            escape(&error.message)
        )?;
    }
    writeln!(out, "</div></article>")
}

/// The register's answer for one card.
fn registry_status(listing: &crate::outcome::Listing) -> String {
    if !listing.listed {
        return "<div class=\"reg\">not in the register</div>".into();
    }
    let mut text = "in the register".to_string();
    if let Some(d) = listing.distance_m {
        text.push_str(&format!(" · {d} m"));
    }
    let record_id = listing
        .record
        .as_ref()
        .and_then(|r| r.get("id"))
        .map(crate::files::id_key);
    if let Some(id) = record_id {
        text.push_str(&format!(" · {id}"));
    }
    format!("<div class=\"reg listed\">{}</div>", escape(&text))
}

fn group_key(group: Group) -> Option<&'static str> {
    match group {
        Group::FlaggedUnlisted => Some("flagged-unlisted"),
        Group::ListedNotFlagged => Some("listed-not-flagged"),
        Group::Errors => Some("errors"),
        Group::Label(_) => None,
    }
}

/// All, each label, the register's two disagreements (with a register), errors.
fn filters(selection: &Selection) -> Vec<Filter> {
    let cards = &selection.cards;
    let totals = &selection.totals;
    let count = |f: &dyn Fn(&Card) -> bool| cards.iter().filter(|c| f(c)).count();
    let mut filters = vec![Filter {
        key: "all".into(),
        name: "All".into(),
        shown: cards.len(),
        total: totals.buildings,
    }];
    for (i, label) in selection.labels.iter().enumerate() {
        filters.push(Filter {
            key: format!("label-{i}"),
            name: label.clone(),
            shown: count(&|c| c.label.as_ref() == Some(label)),
            total: totals.labels.get(i).copied().unwrap_or(0),
        });
    }
    if let Some(register) = &selection.register {
        filters.push(Filter {
            key: "flagged-unlisted".into(),
            name: format!("{} but not in the register", register.positive_label),
            shown: count(&|c| c.group == Group::FlaggedUnlisted),
            total: totals.flagged_unlisted,
        });
        filters.push(Filter {
            key: "listed-not-flagged".into(),
            name: format!("in the register but not {}", register.positive_label),
            shown: count(&|c| c.group == Group::ListedNotFlagged),
            total: totals.listed_not_flagged,
        });
    }
    filters.push(Filter {
        key: "errors".into(),
        name: "errors".into(),
        shown: count(&|c| c.group == Group::Errors),
        total: totals.errors,
    });
    filters
}

/// Text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// 12345 → "12,345".
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{BuildingError, ErrorCode};
    use crate::outcome::Listing;
    use crate::review::{Register, Totals};

    fn card(order: usize, id: &str, label: Option<&str>, group: Group) -> Card {
        Card {
            order,
            id: id.into(),
            label: label.map(String::from),
            score: label.map(|_| 0.75),
            listing: None,
            error: None,
            jpeg: Some(vec![0xFF, 0xD8]),
            group,
        }
    }

    #[test]
    fn text_is_escaped_and_numbers_grouped() {
        assert_eq!(
            escape("<img src=x onerror='a'>&\""),
            "&lt;img src=x onerror=&#39;a&#39;&gt;&amp;&quot;"
        );
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn the_page_holds_its_cards_filters_and_policy() {
        let mut error = card(2, "<b>x</b>", None, Group::Errors);
        error.error = Some(BuildingError::new(
            ErrorCode::ImageUnavailable,
            "404 <here>",
        ));
        error.jpeg = None;
        let mut listed = card(1, "b1", Some("other"), Group::ListedNotFlagged);
        listed.listing = Some(Listing {
            listed: true,
            record: Some(serde_json::json!({"id": "PL-1"})),
            distance_m: Some(6.21),
        });
        let selection = Selection {
            cards: vec![
                card(0, "b0", Some("asbestos"), Group::FlaggedUnlisted),
                listed,
                error,
            ],
            totals: Totals {
                buildings: 10,
                labels: vec![4, 5],
                errors: 1,
                flagged_unlisted: 3,
                listed_not_flagged: 1,
            },
            limit: 3,
            capped: true,
            labels: vec!["other".into(), "asbestos".into()],
            register: Some(Register {
                positive_label: "asbestos".into(),
            }),
        };
        let context = Context {
            input: "in.csv".into(),
            model_uri: "file:///m.onnx".into(),
            register_uri: Some("file:///r.csv".into()),
            chip_size: (64, 64),
            notes: vec![],
        };
        let mut out = Vec::new();
        write(&mut out, &selection, &context).unwrap();
        let html = String::from_utf8(out).unwrap();
        assert!(html.contains(CSP), "the policy");
        assert!(!html.contains("<b>x</b>") && html.contains("&lt;b&gt;x&lt;/b&gt;"));
        assert!(html.contains("404 &lt;here&gt;"));
        assert!(html.contains("Showing 3 of 10 buildings (--review-limit 3)"));
        for (key, shown) in [
            ("all", 3),
            ("label-0", 1),
            ("label-1", 1),
            ("flagged-unlisted", 1),
            ("listed-not-flagged", 1),
            ("errors", 1),
        ] {
            let button = html
                .split("<button")
                .find(|b| b.contains(&format!("data-filter=\"{key}\"")))
                .unwrap_or_else(|| panic!("no {key} button"));
            assert!(
                button.contains(&format!("<span class=\"count\">{shown}</span>")),
                "{key}: {button}"
            );
        }
        assert!(html.contains("in the register · 6.21 m · PL-1"));
        assert_eq!(html.matches("<article").count(), 3);
        assert_eq!(html.matches("data:image/jpeg;base64,/9g=").count(), 2);
        // Nothing that would load from elsewhere.
        for needle in ["http://", "https://", "src=\"//", "@import", "url("] {
            assert!(!html.contains(needle), "{needle}");
        }
    }
}
