//! What every command builds from a validated config before it starts: the log format, the
//! trusted proxies, the compiled rules, the checked sinks and the log paths.

use crate::config::Config;
use crate::engine::rule::CompiledRules;
use crate::error::{Error, FormatUnusable};
use crate::parse::Format;
use crate::proxy::{self, Proxies};
use crate::sink::{self, SinkSpec};

/// What `replay` and `watch` both build from a validated config before they start.
pub(crate) struct Compiled {
    pub format: Format,
    pub proxies: Proxies,
    pub rules: CompiledRules,
    pub sinks: Vec<SinkSpec>,
    /// The `PATH|GLOB` arguments, or `[input] paths` when none were given.
    pub args: Vec<String>,
}

pub(crate) fn compile(config: &Config, paths: &[String]) -> Result<Compiled, Error> {
    let mut compiled = compile_without_sinks(config, paths)?;
    compiled.sinks = sink::parse_sinks(config)?;
    sink::mark_fleet_sinks(config, &mut compiled.sinks)?;
    Ok(compiled)
}

/// [`compile`] for the commands that never act (`test`, `analyze`, `bench`, replay without
/// `--sinks`): `sinks` is empty, and a `[[sink]]` table that does not check is only a warning
/// (it would stop `watch`, not this command).
pub(crate) fn compile_without_sinks(config: &Config, paths: &[String]) -> Result<Compiled, Error> {
    if let Err(e) = sink::parse_sinks(config) {
        log::warn!("{e} (the sinks are not used here; watch would refuse this config)");
    }
    let mut format = compile_format(config)?;
    let proxies = proxy::setup(config, &mut format)?;
    let rules = compile_rules(config)?;
    let sinks = Vec::new();
    let args = if paths.is_empty() {
        config.input.paths.clone()
    } else {
        paths.to_vec()
    };
    if args.is_empty() {
        return Err(Error::NoLogFiles);
    }
    Ok(Compiled {
        format,
        proxies,
        rules,
        sinks,
        args,
    })
}

/// The configured log format, which must log a client and a time: without them nothing can be
/// counted, and every line would silently fall into one key at one instant.
pub(crate) fn compile_format(config: &Config) -> Result<Format, Error> {
    let err = |why: FormatUnusable| Error::Format {
        origin: config.origin.clone(),
        why,
    };
    let format = Format::from_spec(&config.input.format).map_err(|e| err(e.into()))?;
    if !format.has_client() {
        return Err(err(FormatUnusable::NoClient));
    }
    if !format.has_time() {
        return Err(err(FormatUnusable::NoTime));
    }
    Ok(format)
}

pub(crate) fn compile_rules(config: &Config) -> Result<CompiledRules, Error> {
    CompiledRules::new(&config.rules).map_err(|source| Error::Rules {
        origin: config.origin.clone(),
        source,
    })
}
