//! Robustness: random and mutated YAML never makes the compiler panic, and size/depth caps hold.
//! Uses a small deterministic generator (xorshift) so that failures are reproducible by seed.

use crate::support::{compile_text, test_data};

/// A deterministic pseudo-random generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const FRAGMENTS: &[&str] = &[
    "steps:",
    "jobs:",
    "stages:",
    "- ",
    "  ",
    "    ",
    "\n",
    "script: echo",
    "job: j",
    "stage: s",
    "template: t.yml",
    "parameters:",
    "${{ if eq(1, 1) }}:",
    "${{ else }}:",
    "${{ each x in parameters.p }}:",
    "${{ insert }}:",
    "${{ x }}",
    "${{ parameters.p }}",
    "$[ variables.a ]",
    "$(macro)",
    "dependsOn: s",
    "condition: succeeded()",
    "strategy:",
    "matrix:",
    "parallel: 2",
    "deployment: d",
    "runOnce:",
    "deploy:",
    "extends:",
    "task: A@1",
    "inputs:",
    "variables:",
    "- name: n",
    "value: v",
    "- group: g",
    "&a",
    "*a",
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "'",
    "\"",
    "|",
    ">",
    "#",
    "?",
    "!tag",
    "---",
    "...",
    "\t",
    "null",
    "true",
    "1e999",
    "é",
    "${{",
    "}}",
    "@self",
    "pool: server",
    "environment: e",
    "- template: ../x.yml",
    "name: $(Rev:r)",
    "- ${{ parameters.steps }}",
];

fn random_document(rng: &mut Rng) -> String {
    let mut text = String::new();
    for _ in 0..rng.below(60) {
        text.push_str(FRAGMENTS[rng.below(FRAGMENTS.len())]);
        if rng.below(3) == 0 {
            text.push('\n');
        }
    }
    text
}

fn mutate(rng: &mut Rng, text: &str) -> String {
    let mut bytes: Vec<char> = text.chars().collect();
    for _ in 0..1 + rng.below(6) {
        if bytes.is_empty() {
            break;
        }
        let at = rng.below(bytes.len());
        match rng.below(4) {
            0 => {
                bytes.remove(at);
            }
            1 => {
                let fragment = FRAGMENTS[rng.below(FRAGMENTS.len())];
                for (i, c) in fragment.chars().enumerate() {
                    bytes.insert(at + i, c);
                }
            }
            2 => {
                let other = rng.below(bytes.len());
                bytes.swap(at, other);
            }
            _ => bytes.insert(at, [' ', '\n', ':', '-', '$', '{'][rng.below(6)]),
        }
    }
    bytes.into_iter().collect()
}

#[test]
fn random_documents_never_panic() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..3000 {
        let text = random_document(&mut rng);
        let output = compile_text(&text);
        // Either a plan or at least one diagnostic: never silence.
        assert!(
            output.plan.is_some() || !output.diagnostics.is_empty(),
            "no plan and no diagnostic for:\n{text}"
        );
    }
}

#[test]
fn mutated_test_pipelines_never_panic() {
    let mut rng = Rng(0x0123_4567_89AB_CDEF);
    let mut sources = Vec::new();
    for folder in ["ok", "err", "templates"] {
        for entry in std::fs::read_dir(test_data().join(folder))
            .expect("folder exists")
            .flatten()
        {
            if entry.path().extension().is_some_and(|e| e == "yml") {
                sources.push(std::fs::read_to_string(entry.path()).expect("readable"));
            }
        }
    }
    assert!(sources.len() > 20);
    for round in 0..2000 {
        let text = mutate(&mut rng, &sources[round % sources.len()]);
        let output = compile_text(&text);
        assert!(
            output.plan.is_some() || !output.diagnostics.is_empty(),
            "no plan and no diagnostic for:\n{text}"
        );
    }
}

#[test]
fn deep_nesting_is_capped_with_a_diagnostic() {
    let text = format!(
        "steps:\n- script: {}x{}\n",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let output = compile_text(&text);
    assert!(output.plan.is_none());
    assert!(
        output
            .diagnostics
            .iter()
            .any(|d| d.code == "pipeline::too-deep"),
        "{:?}",
        output.diagnostics
    );
}

#[test]
fn exponential_each_expansion_is_capped() {
    // Each level doubles the output; 40 levels would be 2^40 steps without the node cap.
    let mut text =
        String::from("parameters:\n- name: two\n  type: object\n  default: [1, 2]\nsteps:\n");
    let mut indent = String::new();
    for level in 0..40 {
        text.push_str(&format!(
            "{indent}- ${{{{ each x{level} in parameters.two }}}}:\n"
        ));
        indent.push_str("  ");
    }
    text.push_str(&format!("{indent}- script: echo\n"));
    let output = compile_text(&text);
    assert!(output.plan.is_none());
    let codes: Vec<&str> = output.diagnostics.iter().map(|d| d.code.as_str()).collect();
    assert!(
        codes.contains(&"pipeline::too-large") || codes.contains(&"pipeline::too-deep"),
        "{codes:?}"
    );
}

#[test]
fn oversized_file_is_rejected() {
    let text = format!(
        "steps:\n- script: echo {}\n",
        "x".repeat(lockgate_pipeline::yaml::MAX_FILE_BYTES)
    );
    let output = compile_text(&text);
    assert!(output.plan.is_none());
    assert_eq!(output.diagnostics[0].code, "pipeline::file-too-large");
}

#[test]
fn more_than_100_template_files_is_a_diagnostic() {
    // The entry includes t0 .. t119 one after another: file 101 (t99) is refused, naming the limit.
    let mut entry = String::from("steps:\n");
    let mut files = Vec::new();
    for i in 0..120 {
        entry.push_str(&format!("- template: t{i}.yml\n"));
        files.push((format!("t{i}.yml"), format!("steps:\n- script: echo {i}\n")));
    }
    files.push(("azure-pipelines.yml".to_string(), entry));
    let reader = crate::support::MemoryReader(files);
    let input = lockgate_pipeline::CompileInput {
        entry: "azure-pipelines.yml".into(),
        reader: &reader,
        parameters: Vec::new(),
        variables: Vec::new(),
    };
    let output = lockgate_pipeline::compile(&input);
    assert!(output.plan.is_none());
    let too_many: Vec<_> = output
        .diagnostics
        .iter()
        .filter(|d| d.code == "pipeline::too-many-files")
        .collect();
    assert_eq!(too_many.len(), 21, "{:?}", output.diagnostics);
    assert!(too_many[0].message.contains("at most 100 files"));
    assert_eq!(too_many[0].span.as_ref().map(|s| s.line), Some(101));
    assert!(
        too_many[0].label.contains("t99.yml"),
        "{}",
        too_many[0].label
    );
}

/// The process's peak resident memory in KiB (`VmHWM`); each test runs in its own process.
fn peak_memory_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn string_amplification_stops_at_the_byte_budget_naming_the_expression() {
    // Without the budget this pipeline built about 1 GiB of step text (4 GB resident).
    let output = crate::support::check("err/amplification.yml");
    assert!(output.plan.is_none());
    let over: Vec<_> = output
        .diagnostics
        .iter()
        .filter(|d| d.code == "pipeline::too-large")
        .collect();
    assert_eq!(over.len(), 1, "{:?}", output.diagnostics);
    let diagnostic = over[0];
    assert_eq!(
        diagnostic.message,
        format!(
            "template expansion built more than {} bytes of text",
            32 * 1024 * 1024
        )
    );
    let span = diagnostic.span.as_ref().expect("a span");
    assert_eq!(
        (span.file.as_str(), span.line),
        ("err/amplification.yml", 13)
    );
    assert!(
        diagnostic
            .label
            .contains("replace(replace(replace(parameters.seed"),
        "{}",
        diagnostic.label
    );
    let peak = peak_memory_kib();
    assert!(
        peak > 0 && peak < 400 * 1024,
        "peak resident memory {peak} KiB"
    );
}
