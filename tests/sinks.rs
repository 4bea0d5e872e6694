//! End-to-end tests of the sinks: the real binary replaying real files into each configured
//! `[[sink]]`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn floodwatch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_floodwatch"))
        .args(args)
        .output()
        .expect("run floodwatch")
}

fn demo_glob() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/replay/vhosts/*/logs/access_log*")
        .display()
        .to_string()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("floodwatch.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn jsonl_sinks_write_what_stdout_gets_without_sinks() {
    let plain = floodwatch(&["replay", "--ban", "10s", &demo_glob()]);
    assert!(plain.status.success(), "{}", stderr(&plain));
    let expected = String::from_utf8_lossy(&plain.stdout).into_owned();
    assert!(json_lines(&expected).len() >= 3, "{expected}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    let config = write_config(
        dir.path(),
        &format!(
            "[[sink]]\ntype = \"jsonl\"\npath = {:?}\n\n[[sink]]\ntype = \"jsonl\"\npath = \"-\"\n",
            file.display().to_string()
        ),
    );
    let out = floodwatch(&[
        "replay",
        "--ban",
        "10s",
        "--config",
        config.to_str().unwrap(),
        &demo_glob(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), expected);
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
    let n = json_lines(&expected).len();
    assert!(
        stderr(&out).contains(&format!("sink[0] jsonl: {n} delivered, 0 failed")),
        "{}",
        stderr(&out)
    );
}

#[test]
fn sink_config_errors_name_the_key_and_file_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[[sink]]\ntype = \"jsonl\"\npath = \"-\"\nbogus = true\n",
    );
    let glob = demo_glob();
    for args in [vec!["replay", &glob], vec!["check-config"]] {
        let cmd = args[0];
        let mut args = args.clone();
        args.extend(["--config", config.to_str().unwrap()]);
        let out = floodwatch(&args);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&format!(
                "{}: sink[0].bogus: unknown field",
                config.display()
            )),
            "{err}"
        );
    }
}
