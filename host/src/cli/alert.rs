//! `healthhost alert test CHANNEL`: sends a test message over one configured channel
//! and prints the channel's answer, so an operator sees a wrong token or chat id
//! before the first real episode does.

use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Subcommand};

use super::{ConfigArgs, current_thread};
use crate::alerts::channels::{self, Answer};
use crate::alerts::message::Notice;
use crate::config::Config;

#[derive(Debug, Args)]
pub(super) struct AlertArgs {
    #[command(subcommand)]
    command: AlertCommand,
}

#[derive(Debug, Subcommand)]
enum AlertCommand {
    /// Send a test message over CHANNEL (a name under [alerts.channels]) and print
    /// its answer. Exit status: 0 taken, 1 refused or unreachable.
    Test(TestArgs),
}

#[derive(Debug, Args)]
struct TestArgs {
    /// The channel's name.
    channel: String,

    #[command(flatten)]
    config: ConfigArgs,
}

pub(super) fn alert(args: AlertArgs) -> anyhow::Result<ExitCode> {
    let AlertCommand::Test(args) = args.command;
    let config = Config::load(&args.config.config)?;
    let Some(channel) = config.alerts.channel(&args.channel) else {
        let names: Vec<&str> = config
            .alerts
            .channels
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        bail!(
            "no channel named '{}' under [alerts.channels] (there are: {})",
            args.channel,
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        );
    };
    let node = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    let notice = Notice {
        delivery_id: format!(
            "test-{}",
            crate::journal::unix_ms(std::time::SystemTime::now())
        ),
        rule: "test".to_owned(),
        node,
        public_url: config.alerts.public_url.clone(),
        items: Vec::new(),
        test: true,
    };
    let answer = current_thread()?.block_on(channels::send(&channels::client(), channel, &notice));
    let kind = channel.kind_name();
    match answer {
        Answer::Delivered(reply) => {
            outln!("{} ({kind}): sent\n{reply}", channel.name)?;
            Ok(ExitCode::SUCCESS)
        }
        Answer::Retry(reply, _) => {
            outln!(
                "{} ({kind}): not sent, try again later\n{reply}",
                channel.name
            )?;
            Ok(ExitCode::from(1))
        }
        Answer::Refused(reply) => {
            outln!("{} ({kind}): refused\n{reply}", channel.name)?;
            Ok(ExitCode::from(1))
        }
    }
}

/// Problems `validate` finds in the rules against the checks that loaded: a name with
/// no check (an error), and a glob that matches none (a note: a drop-in may come).
pub(super) fn rule_problems(config: &Config, checks: &[&str]) -> (Vec<String>, Vec<String>) {
    let (mut errors, mut notes) = (Vec::new(), Vec::new());
    for rule in &config.alerts.rules {
        for pattern in &rule.checks {
            let matched = checks
                .iter()
                .any(|c| crate::config::alerts::glob(pattern, c));
            let is_glob = pattern.contains(['*', '?']);
            let line = format!(
                "alerts.rules.{}.checks: '{pattern}' matches no check",
                rule.name
            );
            match (matched, is_glob) {
                (true, _) => {}
                (false, true) => notes.push(line),
                (false, false) => errors.push(line),
            }
        }
    }
    (errors, notes)
}
