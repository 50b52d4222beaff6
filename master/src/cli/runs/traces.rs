//! `lobster runs traces RUN [--out FILE]`: fetches the per-request records a run's slaves kept
//! (the scenario's `trace:`) through the master, slice by slice, each slave's into a file of
//! its own; sorts each by time, then merges them in time order into one file of JSON lines,
//! each record tagged with its slave. Progress and the slaves that could not be reached go to
//! standard error; the exit code is 1 when any slave's records are missing.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};

use super::super::{ExitStatus, Failure};
use super::live::{MasterFlags, client};
use crate::client::ApiClient;
use crate::home::Home;

/// How long to wait for a slave that is still closing its trace (the run just ended).
const CLOSING_WAIT: Duration = Duration::from_secs(30);

/// What one slave gave.
struct Fetched {
    /// Its records, sorted by time, tagged with the slave, each line led by its time (see
    /// [`write_sorted`]).
    file: tempfile::NamedTempFile,
    records: u64,
    dropped: u64,
}

pub async fn traces(
    id: &str,
    flags: &MasterFlags,
    home: &Home,
    out: Option<&Path>,
) -> Result<ExitStatus, Failure> {
    let Some(c) = client(flags, home).await? else {
        return Err(Failure::trouble(anyhow!(
            "no master of this home is running (give --master URL): traces are fetched through the master from the slaves"
        )));
    };
    write_traces(&c, id, out).await
}

/// Fetches run `id`'s traces through master `c` and writes them merged to `out` (standard
/// output when `None`); `Failed` when a slave's records could not be fetched.
pub(crate) async fn write_traces(
    c: &ApiClient,
    id: &str,
    out: Option<&Path>,
) -> Result<ExitStatus, Failure> {
    let list = c
        .trace_slaves(id)
        .await
        .with_context(|| format!("cannot list the slaves of run {id}"))
        .map_err(Failure::trouble)?;
    if !list.traced {
        return Err(Failure::bad_input(anyhow!(
            "run {id} kept no trace: its scenario has no `trace:` (see docs/scenario.md, \"Traces\")"
        )));
    }
    if list.slaves.is_empty() {
        return Err(Failure::trouble(anyhow!(
            "no slave reported on run {id}: there is no trace to fetch"
        )));
    }
    let mut fetched = Vec::new();
    let mut missing = Vec::new();
    for s in &list.slaves {
        if !s.connected {
            missing.push(format!("{} (not connected to the master)", s.slave));
            continue;
        }
        match fetch(c, id, &s.uid, &s.slave).await {
            Ok(f) => fetched.push(f),
            Err(e) => missing.push(format!("{} ({e:#})", s.slave)),
        }
    }
    let records: u64 = fetched.iter().map(|f| f.records).sum();
    let dropped: u64 = fetched.iter().map(|f| f.dropped).sum();
    let inputs = fetched
        .iter()
        .map(|f| f.file.reopen().map(BufReader::new))
        .collect::<Result<Vec<_>, _>>()
        .context("cannot read back a fetched trace")
        .map_err(Failure::trouble)?;
    let shown = match out {
        Some(path) => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("cannot write {}", path.display()))
                .map_err(Failure::trouble)?;
            merge(inputs, BufWriter::new(file))
                .with_context(|| format!("cannot write {}", path.display()))
                .map_err(Failure::trouble)?;
            path.display().to_string()
        }
        None => {
            merge(inputs, BufWriter::new(std::io::stdout().lock()))
                .context("cannot write the trace")
                .map_err(Failure::trouble)?;
            "standard output".into()
        }
    };
    eprintln!(
        "{records} records of run {id} from {} slave(s) written to {shown}, in time order{}",
        fetched.len(),
        if dropped > 0 {
            format!(
                "; {dropped} more were not kept by the slaves (their disks fell behind, or the trace's max_mb)"
            )
        } else {
            String::new()
        }
    );
    if missing.is_empty() {
        Ok(ExitStatus::Success)
    } else {
        eprintln!("not fetched: {}", missing.join(", "));
        Ok(ExitStatus::Failed)
    }
}

/// Fetches one slave's trace, slice by slice, showing progress; sorts it by time.
async fn fetch(c: &ApiClient, id: &str, uid: &str, slave: &str) -> anyhow::Result<Fetched> {
    let mut raw = Vec::new();
    let mut shown = Instant::now();
    let closing_until = Instant::now() + CLOSING_WAIT;
    let dropped = loop {
        let Some(slice) = c.trace_slice(id, uid, raw.len() as u64).await? else {
            // The run just ended there: the slave is closing its trace.
            if Instant::now() >= closing_until {
                anyhow::bail!(
                    "its trace was still being written after {} s",
                    CLOSING_WAIT.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        };
        if slice.data.is_empty() && (raw.len() as u64) < slice.total {
            anyhow::bail!("the slave sent an empty slice at byte {}", raw.len());
        }
        raw.extend_from_slice(&slice.data);
        if shown.elapsed() >= Duration::from_millis(500) || raw.len() as u64 >= slice.total {
            eprintln!(
                "{slave}: {:.1} of {:.1} MB",
                raw.len() as f64 / 1e6,
                slice.total as f64 / 1e6
            );
            shown = Instant::now();
        }
        if raw.len() as u64 >= slice.total {
            break slice.dropped;
        }
    };
    let lines = tag_and_sort(&raw, slave)?;
    drop(raw);
    let records = lines.len() as u64;
    let mut file = tempfile::NamedTempFile::new().context("cannot make a temporary file")?;
    write_sorted(&lines, BufWriter::new(file.as_file_mut()))?;
    Ok(Fetched {
        file,
        records,
        dropped,
    })
}

#[derive(serde::Deserialize)]
struct When {
    t_us: u64,
}

/// Each record of `raw` (JSON lines) with its time, tagged `"slave"`, sorted by time (stable:
/// records of the same microsecond keep the slave's order).
fn tag_and_sort(raw: &[u8], slave: &str) -> anyhow::Result<Vec<(u64, String)>> {
    let text = std::str::from_utf8(raw).context("a trace that is not UTF-8")?;
    let tag = serde_json::to_string(slave).expect("a string serializes");
    let mut lines = text
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let when: When = serde_json::from_str(l)
                .with_context(|| format!("a record that cannot be read: {l}"))?;
            let rest = l
                .strip_prefix('{')
                .context("a record that is not an object")?;
            Ok((when.t_us, format!("{{\"slave\":{tag},{rest}")))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    lines.sort_by_key(|(t, _)| *t);
    Ok(lines)
}

/// Writes sorted records for [`merge`], each line `TIME<TAB>RECORD`, so the merge reads each
/// record's time without parsing its JSON again.
fn write_sorted(lines: &[(u64, String)], mut w: impl Write) -> std::io::Result<()> {
    for (t, line) in lines {
        writeln!(w, "{t}\t{line}")?;
    }
    w.flush()
}

/// Merges inputs of [`write_sorted`] lines, each sorted by time, into `out` in time order
/// (ties: the earlier input first), the records without their time prefix; returns the
/// records written.
fn merge<R: BufRead, W: Write>(inputs: Vec<R>, mut out: W) -> anyhow::Result<u64> {
    let mut readers: Vec<std::io::Lines<R>> = inputs.into_iter().map(BufRead::lines).collect();
    let mut heads: BinaryHeap<Reverse<(u64, usize, String)>> = BinaryHeap::new();
    let next =
        |r: &mut std::io::Lines<R>, i: usize| -> anyhow::Result<Option<(u64, usize, String)>> {
            let Some(line) = r.next() else {
                return Ok(None);
            };
            let mut line = line?;
            let tab = line
                .find('\t')
                .context("a sorted record without its time")?;
            let t: u64 = line[..tab].parse().context("a sorted record's time")?;
            line.drain(..=tab);
            Ok(Some((t, i, line)))
        };
    for (i, r) in readers.iter_mut().enumerate() {
        if let Some(h) = next(r, i)? {
            heads.push(Reverse(h));
        }
    }
    let mut n = 0;
    while let Some(Reverse((_, i, line))) = heads.pop() {
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")?;
        n += 1;
        if let Some(h) = next(&mut readers[i], i)? {
            heads.push(Reverse(h));
        }
    }
    out.flush()?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_tagged_sorted_and_merged_in_time_order() {
        // A slave writes records as requests end: a long request started first comes last.
        let a = b"{\"t_us\":30,\"endpoint\":\"x\"}\n{\"t_us\":10,\"endpoint\":\"slow\"}\n{\"t_us\":50,\"endpoint\":\"x\"}\n";
        let b = b"{\"t_us\":20,\"endpoint\":\"y\"}\n{\"t_us\":30,\"endpoint\":\"y\"}\n";
        let sorted = |raw: &[u8], s: &str| {
            let mut text = Vec::new();
            write_sorted(&tag_and_sort(raw, s).unwrap(), &mut text).unwrap();
            std::io::Cursor::new(text)
        };
        let mut out = Vec::new();
        let n = merge(vec![sorted(a, "s-1"), sorted(b, "s-2")], &mut out).unwrap();
        assert_eq!(n, 5);
        let got: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let order: Vec<(u64, &str, &str)> = got
            .iter()
            .map(|v| {
                (
                    v["t_us"].as_u64().unwrap(),
                    v["slave"].as_str().unwrap(),
                    v["endpoint"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            order,
            [
                (10, "s-1", "slow"),
                (20, "s-2", "y"),
                (30, "s-1", "x"),
                (30, "s-2", "y"),
                (50, "s-1", "x"),
            ]
        );
    }

    #[test]
    fn a_record_that_is_not_json_is_named() {
        let err = tag_and_sort(b"{\"t_us\":1}\nnot json\n", "s-1").unwrap_err();
        assert!(format!("{err:#}").contains("not json"), "{err:#}");
    }
}
