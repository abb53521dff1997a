//! How the process shares its vCPUs: invocations in flight (`AWS_LAMBDA_MAX_CONCURRENCY`,
//! set by Lambda Managed Instances), ONNX Runtime threads and sessions, and the fault-injection
//! drill that proves one request's panic stays its own.

use crate::error::ConfigError;

use super::values::number;

/// One vCPU per 1,769 MB of function memory, at most 6 (Lambda's documented allocation).
pub fn lambda_vcpus(memory_mb: u64) -> usize {
    memory_mb.div_ceil(1769).clamp(1, 6) as usize
}

/// Default ONNX Runtime thread count: the cores this process may use, capped by what
/// Lambda grants for the configured memory (ONNX Runtime's own detection sees the host).
pub fn default_inference_threads(available: usize, lambda_memory_mb: Option<u64>) -> usize {
    match lambda_memory_mb {
        Some(mb) => available.min(lambda_vcpus(mb)).max(1),
        None => available.max(1),
    }
}

/// Threads one session is given before a second session pays off. Measured on 2 vCPUs: one
/// session with both threads beats two one-thread sessions (docs/PERFORMANCE.md, "Sessions");
/// the scaling of one session past 4 threads was not measured here (no larger machine), so
/// larger environments get a session per 4 vCPUs, and `make bench` measures the choice on
/// whatever machine runs it.
pub const THREADS_PER_SESSION: usize = 4;

/// Default `INFERENCE_SESSIONS`: one per [`THREADS_PER_SESSION`] threads, at least one. Every
/// classic Lambda size (at most 6 vCPUs) gets one session, as before.
pub fn default_inference_sessions(threads: usize) -> usize {
    (threads / THREADS_PER_SESSION).max(1)
}

/// The inference settings read from the environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inference {
    /// `AWS_LAMBDA_MAX_CONCURRENCY`: invocations in flight at once (1 on classic Lambda).
    pub max_concurrency: usize,
    /// `INFERENCE_THREADS`: ONNX Runtime threads over all sessions.
    pub threads: usize,
    /// `INFERENCE_SESSIONS`: sessions running batches side by side.
    pub sessions: usize,
}

impl Inference {
    /// `get` returns a trimmed, non-empty value or `None`; `available` is the CPUs this process
    /// may use (cgroup limits included).
    pub fn from_lookup(
        get: &impl Fn(&str) -> Option<String>,
        available: usize,
    ) -> Result<Self, ConfigError> {
        // lambda_runtime reads the variable itself and serves one at a time when it is not a
        // whole number above 1; the same reading here keeps the two in step.
        let max_concurrency = get("AWS_LAMBDA_MAX_CONCURRENCY")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(1)
            .max(1);
        // Lambda's 1,769 MB-per-vCPU rule is classic Lambda's: a Managed Instances environment
        // gets memory / (its memory per vCPU) vCPUs, which its CPU limits already show.
        let memory_mb = get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
            .and_then(|v| v.parse().ok())
            .filter(|_| max_concurrency == 1);
        let threads = number(
            "INFERENCE_THREADS",
            get("INFERENCE_THREADS"),
            default_inference_threads(available, memory_mb),
            1..=64,
        )?;
        let sessions = number(
            "INFERENCE_SESSIONS",
            get("INFERENCE_SESSIONS"),
            default_inference_sessions(threads),
            1..=64,
        )?;
        if sessions > threads {
            return Err(ConfigError::new(
                "INFERENCE_SESSIONS",
                &sessions.to_string(),
                format!(
                    "more sessions than INFERENCE_THREADS ({threads}): each session needs a \
                     thread of its own"
                ),
            ));
        }
        Ok(Self {
            max_concurrency,
            threads,
            sessions,
        })
    }

    /// ONNX Runtime threads of each session.
    pub fn threads_per_session(&self) -> usize {
        (self.threads / self.sessions).max(1)
    }
}

/// `FAULT_PANIC_ON_RGB`, a resilience drill and nothing else: an inference batch holding a chip
/// whose every pixel is this colour panics. Off unless set. A panic is a bug, and no input
/// triggers a known one, so this is how the guarantee that one request's panic fails only that
/// request's buildings is exercised through the real binary (tests, or an operator's drill).
pub fn fault_panic_rgb(raw: Option<String>) -> Result<Option<[u8; 3]>, ConfigError> {
    let Some(raw) = raw else { return Ok(None) };
    let parts: Vec<Option<u8>> = raw.split(',').map(|v| v.trim().parse().ok()).collect();
    match parts.as_slice() {
        [Some(r), Some(g), Some(b)] => Ok(Some([*r, *g, *b])),
        _ => Err(ConfigError::new(
            "FAULT_PANIC_ON_RGB",
            &raw,
            "expected three comma-separated whole numbers 0..=255 (R,G,B), e.g. 255,0,255",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn inference(pairs: &[(&str, &str)], available: usize) -> Result<Inference, ConfigError> {
        let map: HashMap<&str, &str> = pairs.iter().copied().collect();
        Inference::from_lookup(&|name| map.get(name).map(|v| v.to_string()), available)
    }

    #[test]
    fn vcpus_follow_lambda_memory() {
        assert_eq!(lambda_vcpus(128), 1);
        assert_eq!(lambda_vcpus(1769), 1);
        assert_eq!(lambda_vcpus(3008), 2);
        assert_eq!(lambda_vcpus(10_240), 6);
        assert_eq!(default_inference_threads(8, Some(3008)), 2);
        assert_eq!(default_inference_threads(2, Some(10_240)), 2);
        assert_eq!(default_inference_threads(4, None), 4);
    }

    #[test]
    fn classic_lambda_keeps_one_session_with_every_vcpu() {
        for (memory, available, threads) in [("3008", 8, 2), ("10240", 16, 6), ("1769", 2, 1)] {
            let i = inference(&[("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory)], available).unwrap();
            assert_eq!(
                (i.max_concurrency, i.threads, i.sessions),
                (1, threads, 1),
                "{memory} MB"
            );
        }
        // A value lambda_runtime would not run concurrently with is one at a time here too.
        for raw in ["1", "0", "many"] {
            let i = inference(&[("AWS_LAMBDA_MAX_CONCURRENCY", raw)], 2).unwrap();
            assert_eq!(i.max_concurrency, 1, "{raw}");
        }
    }

    #[test]
    fn managed_instances_use_the_environments_cpus_and_more_sessions_on_many() {
        // 32 GiB at 2 GiB per vCPU: 16 vCPUs, not Lambda's 6.
        let i = inference(
            &[
                ("AWS_LAMBDA_MAX_CONCURRENCY", "64"),
                ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "32768"),
            ],
            16,
        )
        .unwrap();
        assert_eq!((i.max_concurrency, i.threads, i.sessions), (64, 16, 4));
        assert_eq!(i.threads_per_session(), 4);
        let small = inference(&[("AWS_LAMBDA_MAX_CONCURRENCY", "16")], 2).unwrap();
        assert_eq!((small.threads, small.sessions), (2, 1));
    }

    #[test]
    fn sessions_can_be_set_but_not_beyond_the_threads() {
        let i = inference(
            &[("INFERENCE_THREADS", "6"), ("INFERENCE_SESSIONS", "3")],
            2,
        )
        .unwrap();
        assert_eq!((i.sessions, i.threads_per_session()), (3, 2));
        let err = inference(
            &[("INFERENCE_THREADS", "2"), ("INFERENCE_SESSIONS", "3")],
            8,
        )
        .unwrap_err();
        assert_eq!(err.name, "INFERENCE_SESSIONS");
        assert!(err.reason.contains("INFERENCE_THREADS (2)"), "{err}");
        let err = inference(&[("INFERENCE_SESSIONS", "0")], 8).unwrap_err();
        assert!(err.reason.contains("1..=64"), "{err}");
    }

    #[test]
    fn the_fault_drill_is_off_unless_set_and_takes_one_colour() {
        assert_eq!(fault_panic_rgb(None).unwrap(), None);
        assert_eq!(
            fault_panic_rgb(Some("255, 0,255".into())).unwrap(),
            Some([255, 0, 255])
        );
        for bad in ["255,0", "256,0,0", "magenta", "1,2,3,4"] {
            let err = fault_panic_rgb(Some(bad.into())).unwrap_err();
            assert_eq!(err.name, "FAULT_PANIC_ON_RGB", "{bad}");
        }
    }
}
