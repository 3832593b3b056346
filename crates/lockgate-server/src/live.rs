//! Job logs: lines arrive from agents in batches, are stored as deflate-compressed chunks (one chunk per
//! batch, each line prefixed with its step number) and are fanned out live to SSE subscribers.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::Mutex;

use tokio::sync::broadcast;

/// What a live subscriber receives.
#[derive(Clone, Debug, PartialEq)]
pub enum LiveMessage {
    /// New log lines; `first_line` is the 1-based number of the first one.
    Lines {
        first_line: i64,
        lines: Vec<LogLine>,
    },
    /// Steps changed state (the page refreshes its step list).
    Steps,
    /// The job completed; no more lines follow.
    End { result: String },
}

/// One stored log line: the step it belongs to (none for the agent's own lines) and the text.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LogLine {
    pub step: Option<u32>,
    pub text: String,
}

/// Channels of the jobs that have live subscribers.
#[derive(Default)]
pub struct LiveLogs {
    channels: Mutex<HashMap<i64, broadcast::Sender<LiveMessage>>>,
}

impl LiveLogs {
    pub fn subscribe(&self, job_id: i64) -> broadcast::Receiver<LiveMessage> {
        let mut channels = self
            .channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        channels
            .entry(job_id)
            .or_insert_with(|| broadcast::channel(1024).0)
            .subscribe()
    }

    pub fn publish(&self, job_id: i64, message: LiveMessage) {
        let mut channels = self
            .channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let end = matches!(message, LiveMessage::End { .. });
        if let Some(sender) = channels.get(&job_id) {
            let _ = sender.send(message);
            if end || sender.receiver_count() == 0 {
                channels.remove(&job_id);
            }
        }
    }
}

/// Encodes lines for storage: `STEP\tTEXT` per line (`-` for no step), deflate-compressed.
pub fn compress_lines(lines: &[LogLine]) -> Vec<u8> {
    let mut text = String::new();
    for line in lines {
        match line.step {
            Some(step) => text.push_str(&step.to_string()),
            None => text.push('-'),
        }
        text.push('\t');
        // A stored line never contains a newline: the agent splits on them.
        text.push_str(&line.text.replace(['\n', '\r'], " "));
        text.push('\n');
    }
    let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(text.as_bytes());
    encoder.finish().unwrap_or_default()
}

pub fn decompress_lines(compressed: &[u8]) -> Vec<LogLine> {
    let mut text = String::new();
    if flate2::read::DeflateDecoder::new(compressed)
        .read_to_string(&mut text)
        .is_err()
    {
        return vec![LogLine {
            step: None,
            text: "(this part of the log is damaged)".into(),
        }];
    }
    text.lines()
        .map(|line| {
            let (step, text) = line.split_once('\t').unwrap_or(("-", line));
            LogLine {
                step: step.parse().ok(),
                text: text.to_string(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_through_compression() {
        let lines = vec![
            LogLine {
                step: None,
                text: "Checked out main".into(),
            },
            LogLine {
                step: Some(2),
                text: "hello\tworld".into(),
            },
        ];
        let compressed = compress_lines(&lines);
        assert_eq!(decompress_lines(&compressed), lines);
        let many: Vec<LogLine> = (0..1000)
            .map(|_| LogLine {
                step: Some(1),
                text: "same line".into(),
            })
            .collect();
        assert!(
            compress_lines(&many).len() < 200,
            "repetitive logs compress well"
        );
    }

    #[tokio::test]
    async fn subscribers_get_published_lines_then_the_end() {
        let live = LiveLogs::default();
        let mut receiver = live.subscribe(7);
        live.publish(
            7,
            LiveMessage::Lines {
                first_line: 1,
                lines: vec![],
            },
        );
        live.publish(
            7,
            LiveMessage::End {
                result: "succeeded".into(),
            },
        );
        assert!(matches!(
            receiver.recv().await.unwrap(),
            LiveMessage::Lines { first_line: 1, .. }
        ));
        assert!(matches!(
            receiver.recv().await.unwrap(),
            LiveMessage::End { .. }
        ));
        live.publish(8, LiveMessage::Steps);
    }
}
