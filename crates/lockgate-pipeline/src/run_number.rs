//! Run numbers (build numbers) from the pipeline's `name:` format, shared by the server and `lockgate run`:
//! `$(Date:yyyyMMdd)`, `$(Rev:r)`, `$(DayOfYear)` and the other tokens of Microsoft's "Run (build) number"
//! page (Tokens), plus any known variable. `$(Rev:r)` counts runs whose number is otherwise the same, so
//! it resets when the rest of the format changes; the caller keeps the count. Also the run's start time
//! as `System.PipelineStartTime` and `pipeline.startTime` show it.

use lockgate_expr::{MapContext, Object, Value};

/// The predefined variable holding the run's start time.
pub const START_TIME_VARIABLE: &str = "System.PipelineStartTime";

/// A run's start time as `System.PipelineStartTime` holds it: UTC, `yyyy-MM-dd HH:mm:ss+00:00`, a
/// date-time `format('{0:yyyyMMdd}', pipeline.startTime)` reads.
pub fn start_time_text(millis: i64) -> String {
    format!(
        "{}+00:00",
        Civil::from_millis(millis).format("yyyy-MM-dd HH:mm:ss")
    )
}

/// Sets `pipeline.startTime` in a runtime expression or condition context (Microsoft's "Expressions",
/// `format`: `format('{0:yyyyMMdd}', pipeline.startTime)`; "Expressions", `counter`).
pub fn set_pipeline_context(context: &mut MapContext, start_time: Option<&str>) {
    let mut pipeline = Object::new();
    if let Some(start_time) = start_time {
        pipeline.insert("startTime", Value::String(start_time.to_string()));
    }
    context.set("pipeline", Value::Object(pipeline));
}

/// What a run name can refer to.
#[derive(Clone, Debug, Default)]
pub struct NameContext {
    /// Unix milliseconds (UTC) of the queue time.
    pub now_millis: i64,
    pub definition_name: String,
    pub project: String,
    pub run_id: i64,
    /// Full ref name of the source branch.
    pub source_branch: String,
    /// Variables by name (case-insensitive lookup), e.g. the pipeline's own variables.
    pub variables: Vec<(String, String)>,
}

/// The default format when `name:` is absent.
pub const DEFAULT_FORMAT: &str = "$(Date:yyyyMMdd).$(Rev:r)";

/// Expands a format; `revision` is called with the name with the `$(Rev:…)` token removed and returns
/// the counter for it. Unknown tokens are left as written (like Azure Pipelines does).
pub fn expand<F: FnMut(&str) -> i64>(
    format: &str,
    context: &NameContext,
    mut revision: F,
) -> String {
    let mut rest = format;
    let mut out = String::new();
    // Pieces before and after the Rev token, and its zero-pad width.
    let mut rev_at: Option<(usize, usize)> = None;
    while let Some(start) = rest.find("$(") {
        out.push_str(&rest[..start]);
        let Some(len) = rest[start..].find(')') else {
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let token = &rest[start + 2..start + len];
        let (key, arg) = token
            .split_once(':')
            .map_or((token, None), |(k, a)| (k, Some(a)));
        if key.eq_ignore_ascii_case("Rev") && rev_at.is_none() {
            // `$(Rev:r)`, `$(Rev:rr)`, … with optional text around the r's (`$(Rev:.r)`), kept as is.
            let arg = arg.unwrap_or("r");
            let prefix: String = arg.chars().take_while(|c| *c != 'r').collect();
            let after_prefix = &arg[prefix.len()..];
            let width = after_prefix
                .chars()
                .take_while(|c| *c == 'r')
                .count()
                .max(1);
            let suffix = after_prefix.trim_start_matches('r');
            out.push_str(&prefix);
            rev_at = Some((out.len(), width));
            out.push_str(suffix);
        } else {
            match token_value(key, arg, context) {
                Some(value) => out.push_str(&value),
                None => out.push_str(&rest[start..start + len + 1]),
            }
        }
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    match rev_at {
        None => sanitize(&out),
        Some((at, width)) => {
            let number = revision(&out);
            let number = format!("{number:0width$}");
            sanitize(&format!("{}{}{}", &out[..at], number, &out[at..]))
        }
    }
}

/// Characters a build number may not contain (`"/:<>\|?@*`) become `_`; the length is capped at 255.
fn sanitize(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if "\"/:<>\\|?@*".contains(c) || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    let trimmed = cleaned.trim_end_matches('.').trim();
    trimmed.chars().take(255).collect()
}

fn token_value(key: &str, arg: Option<&str>, context: &NameContext) -> Option<String> {
    let civil = Civil::from_millis(context.now_millis);
    let key_lower = key.to_ascii_lowercase();
    let value = match key_lower.as_str() {
        "date" => civil.format(arg.unwrap_or("yyyyMMdd")),
        "year" => civil.format(arg.unwrap_or("yyyy")),
        "month" => format!("{:02}", civil.month),
        "dayofmonth" => format!("{:02}", civil.day),
        "dayofyear" => format!("{:03}", civil.day_of_year),
        "hours" => format!("{:02}", civil.hour),
        "minutes" => format!("{:02}", civil.minute),
        "seconds" => format!("{:02}", civil.second),
        "builddefinitionname" | "build.definitionname" => context.definition_name.clone(),
        "buildid" | "build.buildid" => context.run_id.to_string(),
        "teamproject" | "system.teamproject" => context.project.clone(),
        "sourcebranchname" | "build.sourcebranchname" => context
            .source_branch
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string(),
        "sourcebranch" | "build.sourcebranch" => context.source_branch.clone(),
        _ => {
            return context
                .variables
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(key))
                .map(|(_, v)| v.clone());
        }
    };
    Some(value)
}

/// A UTC calendar time computed from Unix milliseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub day_of_year: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

impl Civil {
    pub fn from_millis(millis: i64) -> Civil {
        let seconds = millis.div_euclid(1000);
        let days = seconds.div_euclid(86_400);
        let of_day = seconds.rem_euclid(86_400);
        // Days to civil date (proleptic Gregorian), after Howard Hinnant's public-domain algorithm.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
        const BEFORE: [u32; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
        let day_of_year = BEFORE[(month - 1) as usize] + day + u32::from(leap && month > 2);
        Civil {
            year,
            month,
            day,
            day_of_year,
            hour: (of_day / 3600) as u32,
            minute: (of_day % 3600 / 60) as u32,
            second: (of_day % 60) as u32,
        }
    }

    /// Formats with .NET-style specifiers: yyyy, yy, MM, M, dd, d, HH, H, mm, ss; other text is kept.
    pub fn format(&self, pattern: &str) -> String {
        let mut out = String::new();
        let chars: Vec<char> = pattern.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let run = chars[i..].iter().take_while(|x| **x == c).count();
            let piece = match (c, run) {
                ('y', 4..) => format!("{:04}", self.year),
                ('y', _) => format!("{:02}", self.year.rem_euclid(100)),
                ('M', 1) => self.month.to_string(),
                ('M', _) => format!("{:02}", self.month),
                ('d', 1) => self.day.to_string(),
                ('d', _) => format!("{:02}", self.day),
                ('H', 1) => self.hour.to_string(),
                ('H', _) => format!("{:02}", self.hour),
                ('m', _) => format!("{:02}", self.minute),
                ('s', _) => format!("{:02}", self.second),
                _ => chars[i..i + run].iter().collect(),
            };
            out.push_str(&piece);
            i += run;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-11-23 17:58:09 UTC
    const NOW: i64 = 1_795_456_689_000;

    fn context() -> NameContext {
        NameContext {
            now_millis: NOW,
            definition_name: "app-ci".into(),
            project: "demo".into(),
            run_id: 42,
            source_branch: "refs/heads/feature/login".into(),
            variables: vec![("major".into(), "3".into())],
        }
    }

    #[test]
    fn civil_dates_are_computed_in_utc() {
        let civil = Civil::from_millis(NOW);
        assert_eq!((civil.year, civil.month, civil.day), (2026, 11, 23));
        assert_eq!((civil.hour, civil.minute, civil.second), (17, 58, 9));
        assert_eq!(civil.day_of_year, 327);
        assert_eq!(Civil::from_millis(0).format("yyyy-MM-dd"), "1970-01-01");
        assert_eq!(
            Civil::from_millis(951_782_400_000).day_of_year,
            60,
            "2000-02-29 is a leap day"
        );
    }

    #[test]
    fn the_start_time_is_a_date_time_format_reads() {
        assert_eq!(start_time_text(NOW), "2026-11-23 17:58:09+00:00");
        let mut context = MapContext::new();
        set_pipeline_context(&mut context, Some(&start_time_text(NOW)));
        let expr = lockgate_expr::parse(
            "format('{0:yyyyMMdd}', pipeline.startTime)",
            &lockgate_expr::ParseOptions::runtime(),
        )
        .unwrap();
        assert_eq!(
            expr.evaluate(&context).unwrap(),
            Value::String("20261123".into())
        );
    }

    #[test]
    fn default_format_counts_revisions_per_date() {
        let mut seen = Vec::new();
        let name = expand(DEFAULT_FORMAT, &context(), |prefix| {
            seen.push(prefix.to_string());
            3
        });
        assert_eq!(name, "20261123.3");
        assert_eq!(seen, vec!["20261123."]);
    }

    #[test]
    fn tokens_and_variables_expand() {
        let name = expand(
            "$(BuildDefinitionName)_$(major).$(Year:yy).$(DayOfYear)$(Rev:.rr) on $(SourceBranchName) $(Unknown)",
            &context(),
            |_| 7,
        );
        assert_eq!(name, "app-ci_3.26.327.07 on login $(Unknown)");
        assert_eq!(
            expand("$(Date:yyyy/MM/dd)", &context(), |_| 1),
            "2026_11_23"
        );
        assert_eq!(expand("v$(major", &context(), |_| 1), "v$(major");
        assert_eq!(
            expand("$(Rev:ré r)", &context(), |_| 4),
            "4é r",
            "odd Rev arguments do not panic"
        );
        assert_eq!(expand("$(Rev:)", &context(), |_| 4), "4");
    }
}
