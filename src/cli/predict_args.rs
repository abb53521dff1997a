//! `bootstrap predict`'s arguments, checked before anything is read or loaded.

use std::path::PathBuf;

use crate::review::DEFAULT_LIMIT;

/// What `bootstrap predict` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    pub input: PathBuf,
    /// `-o`/`--output`; stdout (as JSON Lines) when absent.
    pub output: Option<PathBuf>,
    /// `--review PAGE.html`.
    pub review: Option<PathBuf>,
    /// `--review-limit N`: most cards on the page.
    pub review_limit: usize,
    /// `--resume`: go on from what the output already holds.
    pub resume: bool,
}

impl Args {
    /// Parses the arguments after `predict`; the error is a message for the user.
    pub fn parse(args: &[String]) -> Result<Self, String> {
        let mut input = None;
        let mut output = None;
        let mut review = None;
        let mut review_limit = None;
        let mut resume = false;
        let mut rest = args.iter();
        while let Some(arg) = rest.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) if flag.starts_with("--") => (flag, Some(value.to_string())),
                _ => (arg.as_str(), None),
            };
            let mut value = |name: &str| {
                inline
                    .clone()
                    .or_else(|| rest.next().cloned())
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            match flag {
                "-o" | "--output" => output = Some(PathBuf::from(value("--output")?)),
                "--review" => review = Some(PathBuf::from(value("--review")?)),
                "--review-limit" => {
                    let text = value("--review-limit")?;
                    let n = text
                        .parse::<usize>()
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or_else(|| {
                            format!("--review-limit must be a whole number above 0, not {text:?}")
                        })?;
                    review_limit = Some(n);
                }
                "--resume" if inline.is_none() => resume = true,
                f if f.starts_with('-') && f != "-" => return Err(format!("unknown option {arg}")),
                _ if input.is_some() => {
                    return Err(format!("one input file only; {arg:?} is a second one"));
                }
                _ => input = Some(PathBuf::from(arg)),
            }
        }
        let input = input.ok_or("predict needs an input file: bootstrap predict BUILDINGS.csv")?;
        if resume && output.is_none() {
            return Err("--resume needs the output to go on from: -o OUTPUT".into());
        }
        if review_limit.is_some() && review.is_none() {
            return Err("--review-limit limits the review page: add --review PAGE.html".into());
        }
        for (name, path) in [("the output", &output), ("the review page", &review)] {
            if path.as_ref() == Some(&input) {
                return Err(format!(
                    "{name} would overwrite the input {}",
                    input.display()
                ));
            }
        }
        if output.is_some() && output == review {
            return Err("the output and the review page are the same file".into());
        }
        Ok(Self {
            input,
            output,
            review,
            review_limit: review_limit.unwrap_or(DEFAULT_LIMIT),
            resume,
        })
    }

    /// The command that resumes this run, for the message after an interruption.
    pub fn resume_command(&self) -> String {
        let mut words = vec![
            "bootstrap".to_string(),
            "predict".into(),
            quote(&self.input),
        ];
        if let Some(output) = &self.output {
            words.extend(["-o".into(), quote(output)]);
        }
        if let Some(review) = &self.review {
            words.extend(["--review".into(), quote(review)]);
            if self.review_limit != DEFAULT_LIMIT {
                words.extend(["--review-limit".into(), self.review_limit.to_string()]);
            }
        }
        words.push("--resume".into());
        words.join(" ")
    }
}

/// A path as a shell word.
fn quote(path: &std::path::Path) -> String {
    let text = path.display().to_string();
    let plain = text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+,:@".contains(c));
    if plain && !text.is_empty() {
        text
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(list: &[&str]) -> Result<Args, String> {
        Args::parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn every_option_in_both_spellings() {
        let a = parse(&[
            "in.csv",
            "-o",
            "out.csv",
            "--review=r.html",
            "--review-limit",
            "50",
            "--resume",
        ])
        .unwrap();
        assert_eq!(
            a,
            Args {
                input: "in.csv".into(),
                output: Some("out.csv".into()),
                review: Some("r.html".into()),
                review_limit: 50,
                resume: true,
            }
        );
        let a = parse(&["--output=o.jsonl", "b.geojson"]).unwrap();
        assert_eq!(
            (a.input, a.output, a.review_limit),
            ("b.geojson".into(), Some("o.jsonl".into()), DEFAULT_LIMIT)
        );
    }

    #[test]
    fn mistakes_are_named() {
        for (args, want) in [
            (vec![], "needs an input file"),
            (
                vec!["a.csv", "b.csv"],
                "one input file only; \"b.csv\" is a second one",
            ),
            (vec!["a.csv", "-o"], "--output needs a value"),
            (vec!["a.csv", "--frobnicate"], "unknown option --frobnicate"),
            (vec!["a.csv", "--resume"], "--resume needs the output"),
            (
                vec!["a.csv", "--review", "r.html", "--review-limit", "0"],
                "above 0, not \"0\"",
            ),
            (
                vec!["a.csv", "--review-limit", "5"],
                "add --review PAGE.html",
            ),
            (
                vec!["a.csv", "-o", "a.csv"],
                "the output would overwrite the input a.csv",
            ),
            (
                vec!["a.csv", "-o", "x", "--review", "x"],
                "are the same file",
            ),
        ] {
            let err = parse(&args).unwrap_err();
            assert!(err.contains(want), "{args:?}: {err}");
        }
    }

    #[test]
    fn the_resume_command_repeats_the_run_with_resume() {
        let a = parse(&["my buildings.csv", "-o", "out.csv", "--review", "r.html"]).unwrap();
        assert_eq!(
            a.resume_command(),
            "bootstrap predict 'my buildings.csv' -o out.csv --review r.html --resume"
        );
    }
}
