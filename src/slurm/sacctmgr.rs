//! Running sacctmgr: each process through the instrumented wrapper, with a timeout, retries of
//! what is transient, and its answer read (its exit code alone is not enough).

use std::path::PathBuf;
use std::time::Duration;

use super::diff::Call;

/// How a call ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// sacctmgr said "Nothing new added/deleted/modified": already so.
    AlreadySo,
    Failed {
        reason: &'static str,
        message: String,
    },
}

/// What a `sacctmgr load` may take per line of its file, on top of the call timeout.
pub const LOAD_TIME_PER_LINE: Duration = Duration::from_millis(100);

/// Runs sacctmgr.
pub struct Sacctmgr {
    pub bin: String,
    pub slurm_conf: Option<PathBuf>,
    pub timeout: Duration,
}

impl Sacctmgr {
    /// The sacctmgr a configuration names.
    pub fn from_config(
        config: &crate::config::Config,
        slurm: &crate::config::SlurmConfig,
    ) -> Sacctmgr {
        Sacctmgr {
            bin: slurm.sacctmgr.clone(),
            slurm_conf: slurm.slurm_conf.as_ref().map(|p| config.resolve(p)),
            timeout: Duration::from_secs(slurm.timeout_seconds),
        }
    }

    /// A read-only `sacctmgr -nP …` query; its output, or why it failed.
    pub async fn query(&mut self, args: &[&str]) -> Result<String, String> {
        let operation = format!("show {}", args.get(1).copied().unwrap_or(""));
        crate::backend::call("slurm", &operation, self.show(args), Result::is_ok).await
    }

    async fn show(&self, args: &[&str]) -> Result<String, String> {
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.arg("-nP")
            .args(args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        if let Some(conf) = &self.slurm_conf {
            cmd.env("SLURM_CONF", conf);
        }
        match tokio::time::timeout(self.timeout, cmd.output()).await {
            Err(_) => Err(format!("sacctmgr did not answer within {:?}", self.timeout)),
            Ok(Err(e)) => Err(format!("cannot run {}: {e}", self.bin)),
            Ok(Ok(o)) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).into_owned()),
            Ok(Ok(o)) => Err(format!(
                "sacctmgr {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&o.stderr).trim()
            )),
        }
    }

    /// Runs a call; a `load` call's file is written privately (mode 0600) for the run only.
    pub async fn run_call(&mut self, call: &Call) -> Outcome {
        let Some(text) = &call.file else {
            return self.run(&call.args).await;
        };
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "roster-sacctmgr-{}-{}.cfg",
            std::process::id(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let written = {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .and_then(|mut f| f.write_all(text.as_bytes()))
        };
        if let Err(e) = written {
            let _ = std::fs::remove_file(&path);
            return Outcome::Failed {
                reason: "LoadFile",
                message: format!("cannot write the load file {}: {e}", path.display()),
            };
        }
        let args: Vec<String> = call
            .args
            .iter()
            .map(|a| {
                if a == "file=-" {
                    format!("file={}", path.display())
                } else {
                    a.clone()
                }
            })
            .collect();
        // A load takes time in proportion to its lines (about 15 ms each here; 10,000 users
        // take minutes): cut off at the call timeout, it would be killed and retried forever.
        let lines = u32::try_from(text.lines().count()).unwrap_or(u32::MAX);
        let timeout = self.timeout + LOAD_TIME_PER_LINE * lines;
        let out = self.run_within(&args, timeout).await;
        let _ = std::fs::remove_file(&path);
        out
    }

    pub async fn run(&mut self, args: &[String]) -> Outcome {
        self.run_within(args, self.timeout).await
    }

    /// Runs `sacctmgr -i args`, each attempt allowed `timeout`; a busy database or a timeout
    /// is retried (4 attempts, backing off from 0.5 s).
    async fn run_within(&mut self, args: &[String], timeout: Duration) -> Outcome {
        let mut delay = Duration::from_millis(500);
        let operation = operation(args);
        for attempt in 0..4 {
            let out =
                crate::backend::call("slurm", &operation, self.run_once(args, timeout), |o| {
                    !matches!(o, Outcome::Failed { .. })
                })
                .await;
            match &out {
                Outcome::Failed {
                    reason: "DatabaseBusy" | "Timeout",
                    ..
                } if attempt < 3 => {
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                _ => return out,
            }
        }
        unreachable!("the last attempt returns")
    }
}

impl Sacctmgr {
    /// One `sacctmgr -i args` process.
    async fn run_once(&self, args: &[String], timeout: Duration) -> Outcome {
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.arg("-i")
            .args(args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        if let Some(conf) = &self.slurm_conf {
            cmd.env("SLURM_CONF", conf);
        }
        match tokio::time::timeout(timeout, cmd.output()).await {
            Err(_) => Outcome::Failed {
                reason: "Timeout",
                message: format!("sacctmgr did not answer within {timeout:?}"),
            },
            Ok(Err(e)) => Outcome::Failed {
                reason: "SacctmgrMissing",
                message: format!("cannot run {}: {e}", self.bin),
            },
            Ok(Ok(o)) => classify(
                o.status.success(),
                &String::from_utf8_lossy(&o.stdout),
                &String::from_utf8_lossy(&o.stderr),
            ),
        }
    }
}

/// The operation a call's arguments make (`add user`, `modify account`, `load` …): the label
/// of its metrics.
pub fn operation<S: AsRef<str>>(args: &[S]) -> String {
    match args {
        [verb, ..] if verb.as_ref() == "load" => "load".into(),
        [verb, entity, ..] => format!("{} {}", verb.as_ref(), entity.as_ref()),
        [verb] => verb.as_ref().to_string(),
        [] => String::new(),
    }
}

/// Reads sacctmgr's answer: its exit code alone is not enough.
pub fn classify(success: bool, stdout: &str, stderr: &str) -> Outcome {
    let text = format!("{stdout}\n{stderr}");
    if text.contains("Nothing new added")
        || text.contains("Nothing deleted")
        || text.contains("Nothing modified")
    {
        return Outcome::AlreadySo;
    }
    if success {
        return Outcome::Done;
    }
    let message = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let lower = text.to_lowercase();
    let reason = if lower.contains("database is busy") || lower.contains("try again") {
        "DatabaseBusy"
    } else if lower.contains("job") && (lower.contains("running") || lower.contains("active")) {
        "JobsRunning"
    } else if lower.contains("unable to") && lower.contains("connect")
        || lower.contains("connection refused")
    {
        "SlurmdbdUnreachable"
    } else {
        "SacctmgrFailed"
    };
    Outcome::Failed { reason, message }
}

#[cfg(test)]
mod load_timeout {
    use super::*;

    /// A stand-in for sacctmgr that answers after 2 s (a test of timing, not of sacctmgr). The
    /// margins are tenfold either way, so a loaded machine (a slow python start) cannot
    /// decide the test: the long load is allowed 20 s, the short one 0.3 s.
    fn slow_sacctmgr() -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path =
            std::env::temp_dir().join(format!("roster-slow-sacctmgr-{}", std::process::id()));
        std::fs::write(
            &path,
            "#!/usr/bin/env python3\nimport time\ntime.sleep(2)\n",
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).unwrap();
        path
    }

    fn load(lines: usize) -> Call {
        Call {
            args: vec!["load".into(), "file=-".into()],
            what: "load".into(),
            users: vec![],
            accounts: vec![],
            file: Some("User - 'u':DefaultAccount='a'\n".repeat(lines)),
        }
    }

    #[tokio::test]
    async fn a_load_may_take_longer_than_one_call_in_proportion_to_its_lines() {
        let bin = slow_sacctmgr();
        let mut sacctmgr = Sacctmgr {
            bin: bin.display().to_string(),
            slurm_conf: None,
            timeout: Duration::from_millis(200),
        };
        // Processes started, as the instrumented wrapper counts them.
        let loads = || {
            crate::telemetry::global().sum(
                "roster_backend_operations_total",
                &[("backend", "slurm"), ("operation", "load")],
            )
        };
        let before = loads();
        // 200 lines: 0.2 s + 200 × 0.1 s, enough for the 2 s answer, at the first attempt.
        assert_eq!(sacctmgr.run_call(&load(200)).await, Outcome::Done);
        assert_eq!(loads(), before + 1.0);
        // 1 line: 0.3 s is not; each of the 4 attempts is cut off.
        let out = sacctmgr.run_call(&load(1)).await;
        assert!(
            matches!(&out, Outcome::Failed { reason: "Timeout", message } if message.contains("300ms")),
            "{out:?}"
        );
        assert_eq!(loads(), before + 5.0);
        std::fs::remove_file(bin).unwrap();
    }
}
