//! The admin commands: `floodwatch bans`, `ban`, `unban`, `status` and `top`, each a request to the
//! running watch its config names, its answer printed for a person or, with `--json`, as is.

use std::io::{IsTerminal, Write};

use serde_json::Value;

use super::client::{call, call_raw, ClientError};
use super::render::{BansAnswer, BansTable};
use super::top::Top;
use super::top_text::{self, SortBy};
use super::{render, tui, Request, Status, Unbanned};
use crate::cli::{BanArgs, BansArgs, ReachArgs, StatusArgs, TopArgs, UnbanArgs};
use crate::config::parse_duration;
use crate::error::Error;

fn ask(reach: &ReachArgs, req: &Request) -> Result<Value, Error> {
    let socket = super::reach::socket(reach)?;
    call(&socket, req).map_err(said)
}

/// As [`ask`], the answer's bytes (see [`call_raw`]).
fn ask_raw(reach: &ReachArgs, req: &Request) -> Result<Vec<u8>, Error> {
    let socket = super::reach::socket(reach)?;
    call_raw(&socket, req).map_err(said)
}

fn said(e: ClientError) -> Error {
    match e {
        ClientError::Refused(why) => Error::Runtime(why),
        e => Error::Runtime(e.to_string()),
    }
}

fn print(out: &mut dyn Write, text: &str) -> Result<(), Error> {
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Error::writing("to stdout", e))
}

/// A part of an answer as the type it should be.
fn part<T: serde::de::DeserializeOwned>(answer: &Value, name: &str) -> Result<T, Error> {
    serde_json::from_value(answer.get(name).cloned().unwrap_or(Value::Null)).map_err(|e| {
        Error::Runtime(format!(
            "the running watch's answer has no usable {name:?} ({e}); is it the same version?"
        ))
    })
}

pub fn bans(a: &BansArgs, out: &mut dyn Write) -> Result<(), Error> {
    let raw = ask_raw(&a.reach, &Request::Bans { all: a.all })?;
    let unusable = |e: serde_json::Error| {
        Error::Runtime(format!(
            "the running watch's answer has no usable list of bans ({e}); is it the same version?"
        ))
    };
    let text = if a.json {
        let answer: BansAnswer = serde_json::from_slice(&raw).map_err(unusable)?;
        match a.all {
            false => render::bans_json(&answer),
            true => render::bans_and_pardons_json(&answer),
        }
    } else {
        let answer: BansTable = serde_json::from_slice(&raw).map_err(unusable)?;
        match a.all {
            false => render::bans(&answer),
            true => render::bans(&answer) + &render::pardons(&answer.pardons_answer()),
        }
    };
    print(out, &text)
}

pub fn ban(a: &BanArgs, out: &mut dyn Write) -> Result<(), Error> {
    let ms = parse_duration(&a.duration).map_err(|source| Error::Flag {
        flag: "--for",
        source,
    })?;
    if ms < 1000 {
        return Err(Error::Usage(format!(
            "--for: {:?} is shorter than a second",
            a.duration
        )));
    }
    let req = Request::Ban {
        key: a.key.clone(),
        seconds: ms / 1000,
        rule: a.rule.clone(),
        force: a.force,
    };
    let answer = ask(&a.reach, &req)?;
    print(out, &render::ban(&answer))
}

pub fn unban(a: &UnbanArgs, out: &mut dyn Write) -> Result<(), Error> {
    let req = Request::Unban { key: a.key.clone() };
    let answer = ask(&a.reach, &req)?;
    let unbanned: Unbanned = part(&answer, "unbanned")?;
    let text = render::unban(&a.key, &unbanned).map_err(|e| Error::Runtime(e.to_string()))?;
    print(out, &text)
}

pub fn status(a: &StatusArgs, out: &mut dyn Write) -> Result<(), Error> {
    let files = a.files || a.json;
    let answer = ask(&a.reach, &Request::Status { files })?;
    let status: Status = part(&answer, "status")?;
    let text = match a.json {
        true => answer["status"].to_string() + "\n",
        false => render::status(&status),
    };
    print(out, &text)
}

/// `top`: one frame (`--once`, `--json`), or the live view in the terminal (see [`super::tui`]).
pub fn top(a: &TopArgs, out: &mut dyn Write) -> Result<(), Error> {
    let ban_ms = parse_duration(&a.ban_for).map_err(|source| Error::Flag {
        flag: "--ban-for",
        source,
    })?;
    if ban_ms < 1000 {
        return Err(Error::Usage(format!(
            "--ban-for: {:?} is shorter than a second",
            a.ban_for
        )));
    }
    let sort = match a.sort.as_str() {
        "fill" => SortBy::Fill,
        _ => SortBy::Rate,
    };
    let req = Request::Top {
        limit: Some(usize::from(a.limit)),
    };
    // Asked before anything else: no watch is said at once, with exit code 1.
    let socket = super::reach::socket(&a.reach)?;
    let first = ask(&a.reach, &req)?;
    if a.json {
        return print(out, &(first["top"].to_string() + "\n"));
    }
    let frame: Top = part(&first, "top")?;
    if a.once {
        let rows = usize::from(a.limit);
        return print(
            out,
            &top_text::frame(&frame, sort, a.vhost.as_deref(), rows),
        );
    }
    if !std::io::stdout().is_terminal() {
        return Err(Error::Usage(
            "top: stdout is not a terminal; use --once or --json for one frame".into(),
        ));
    }
    let mut app = tui::App::new(ban_ms / 1000, &a.ban_for);
    app.top = Some(frame);
    app.sort = sort;
    app.vhost = a.vhost.clone();
    let mut fetch = || match call(&socket, &req) {
        Ok(v) => part::<Top>(&v, "top").map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let mut send = |req: Request| match (call(&socket, &req), &req) {
        (Ok(v), Request::Ban { .. }) => render::ban(&v).trim_end().to_string(),
        (Ok(v), Request::Unban { key }) => match part::<Unbanned>(&v, "unbanned") {
            Ok(u) => match render::unban(key, &u) {
                Ok(text) => text.trim_end().replace('\n', " "),
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        },
        (Ok(_), _) => "done".into(),
        (Err(e), _) => format!("refused: {e}"),
    };
    tui::run(app, &mut fetch, &mut send).map_err(|e| Error::writing("to the terminal", e))
}
