//! `zonekv kv ...`.

use std::ops::Bound;

use anyhow::Result;
use bytes::Bytes;
use zonekv_client::{ReadConsistency, ScanOptions};

use crate::cli::{KvArgs, KvCommand};

fn consistency(stale: bool) -> ReadConsistency {
    if stale { ReadConsistency::Stale } else { ReadConsistency::Linearizable }
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub async fn run(args: KvArgs) -> Result<()> {
    let client = crate::connect::client(args.endpoints.split(',').map(str::trim).filter(|s| !s.is_empty()))?;
    match args.command {
        KvCommand::Get { key, stale } => match client.get_with(key.clone(), consistency(stale)).await? {
            Some(v) => out!("{}", show(&v)),
            None => {
                eprintln!("{key}: not found");
                std::process::exit(2);
            }
        },
        KvCommand::Put { key, value } => {
            client.put(key, value).await?;
            out!("OK");
        }
        KvCommand::Del { key } => {
            let existed = client.delete(key).await?;
            out!("{}", if existed { "deleted" } else { "not found" });
        }
        KvCommand::Scan { start, end, limit, reverse, stale } => {
            let opts = ScanOptions {
                start: start.map_or(Bound::Unbounded, |s| Bound::Included(Bytes::from(s))),
                end: end.map_or(Bound::Unbounded, |e| Bound::Excluded(Bytes::from(e))),
                limit,
                reverse,
                consistency: consistency(stale),
                ..ScanOptions::default()
            };
            let page = client.scan(&opts).await?;
            for (k, v) in &page.pairs {
                out!("{}\t{}", show(k), show(v));
            }
            if page.more {
                eprintln!("(more)");
            }
        }
        KvCommand::Cas { key, expected, new } => {
            let out = client.compare_and_swap(key, expected.map(Bytes::from), new.map(Bytes::from)).await?;
            let current = out.current.as_deref().map_or("<absent>".to_string(), show);
            out!("{} (value was {current})", if out.succeeded { "swapped" } else { "not swapped" });
        }
    }
    Ok(())
}
