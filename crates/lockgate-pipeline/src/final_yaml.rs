//! Prints a plan as the final YAML (what Azure Pipelines calls the fully expanded pipeline): every
//! template expanded, matrix legs listed as the job instances they become.

use std::fmt::Write;

use crate::plan::*;

/// Renders the plan as Azure Pipelines YAML with every template expanded.
pub fn to_final_yaml(plan: &Plan) -> String {
    let mut out = String::new();
    if let Some(name) = &plan.name {
        line(&mut out, 0, "name", name);
    }
    if !plan.append_commit_message_to_run_name {
        line(&mut out, 0, "appendCommitMessageToRunName", "false");
    }
    for (key, value) in [("trigger", &plan.trigger), ("pr", &plan.pr)] {
        if let Some(value) = value {
            json_entry(&mut out, 0, key, value);
        }
    }
    if !plan.schedules.is_empty() {
        json_entry(
            &mut out,
            0,
            "schedules",
            &serde_json::Value::Array(plan.schedules.clone()),
        );
    }
    let resources = &plan.resources;
    let kinds: [(&str, &str, &Vec<Resource>); 6] = [
        ("repositories", "repository", &resources.repositories),
        ("pipelines", "pipeline", &resources.pipelines),
        ("containers", "container", &resources.containers),
        ("builds", "build", &resources.builds),
        ("packages", "package", &resources.packages),
        ("webhooks", "webhook", &resources.webhooks),
    ];
    if kinds.iter().any(|(_, _, list)| !list.is_empty()) {
        out.push_str("resources:\n");
        for (kind, alias_key, list) in kinds {
            if list.is_empty() {
                continue;
            }
            let _ = writeln!(out, "  {kind}:");
            for resource in list {
                let _ = writeln!(out, "  - {alias_key}: {}", scalar(&resource.alias));
                for (k, v) in &resource.properties {
                    json_entry(&mut out, 4, k, v);
                }
            }
        }
    }
    if !plan.parameters.is_empty() {
        out.push_str("parameters:\n");
        for parameter in &plan.parameters {
            let _ = writeln!(out, "- name: {}", scalar(&parameter.name));
            if let Some(display_name) = &parameter.display_name {
                line(&mut out, 2, "displayName", display_name);
            }
            line(&mut out, 2, "type", &parameter.r#type);
            json_entry(&mut out, 2, "default", &parameter.value);
            if !parameter.values.is_empty() {
                json_entry(
                    &mut out,
                    2,
                    "values",
                    &serde_json::Value::Array(parameter.values.clone()),
                );
            }
        }
    }
    variables(&mut out, 0, &plan.variables);
    if let Some(lock) = &plan.lock_behavior {
        line(&mut out, 0, "lockBehavior", lock);
    }
    out.push_str("stages:\n");
    for stage in &plan.stages {
        let _ = writeln!(out, "- stage: {}", scalar(&stage.name));
        let i = 2;
        if let Some(d) = &stage.display_name {
            line(&mut out, i, "displayName", d);
        }
        if let Some(group) = &stage.group {
            line(&mut out, i, "group", group);
        }
        if stage.depends_on.is_empty() && !std::ptr::eq(stage, &plan.stages[0]) {
            indent(&mut out, i);
            out.push_str("dependsOn: []\n");
        } else {
            list(&mut out, i, "dependsOn", &stage.depends_on);
        }
        if let Some(c) = &stage.condition {
            line(&mut out, i, "condition", c);
        }
        if let Some(pool) = &stage.pool {
            write_pool(&mut out, i, pool);
        }
        if let Some(lock) = &stage.lock_behavior {
            line(&mut out, i, "lockBehavior", lock);
        }
        if !stage.is_skippable {
            line(&mut out, i, "isSkippable", "false");
        }
        if stage.manual_trigger {
            line(&mut out, i, "trigger", "manual");
        }
        if let Some(context) = &stage.template_context {
            json_entry(&mut out, i, "templateContext", context);
        }
        variables(&mut out, i, &stage.variables);
        indent(&mut out, i);
        out.push_str("jobs:\n");
        // Instances of one matrix/parallel job are consecutive; print the job once with its strategy.
        let mut start = 0;
        while start < stage.jobs.len() {
            let base = &stage.jobs[start].base_name;
            let end = start
                + stage.jobs[start..]
                    .iter()
                    .take_while(|j| &j.base_name == base)
                    .count();
            write_job(&mut out, i, &stage.jobs[start..end]);
            start = end;
        }
    }
    out
}

fn write_job(out: &mut String, i: usize, instances: &[Job]) {
    let Some(job) = instances.first() else { return };
    indent(out, i);
    let key = if job.kind == JobKind::Deployment {
        "deployment"
    } else {
        "job"
    };
    let _ = writeln!(out, "- {key}: {}", scalar(&job.base_name));
    let i = i + 2;
    let display_name = match &job.strategy.leg {
        // Instance display names carry the leg; print the job's own.
        Some(leg) => job
            .display_name
            .as_deref()
            .and_then(|d| d.strip_suffix(leg.as_str()))
            .and_then(|d| d.strip_suffix(' '))
            .map(str::to_string),
        None => job.display_name.clone(),
    };
    if let Some(d) = display_name.filter(|d| job.strategy.leg.is_none() || d != &job.base_name) {
        line(out, i, "displayName", &d);
    }
    list(out, i, "dependsOn", &job.depends_on);
    if let Some(c) = &job.condition {
        line(out, i, "condition", c);
    }
    if job.strategy.leg.is_some() {
        indent(out, i);
        out.push_str("strategy:\n");
        let is_matrix = instances.iter().any(|j| {
            j.matrix_variables().next().is_some()
                || j.strategy
                    .leg
                    .as_deref()
                    .is_some_and(|l| l.parse::<u32>().is_err())
        });
        if is_matrix {
            indent(out, i + 2);
            out.push_str("matrix:\n");
            for instance in instances {
                indent(out, i + 4);
                let leg = instance.strategy.leg.clone().unwrap_or_default();
                let matrix_variables: Vec<(&str, &str)> = instance.matrix_variables().collect();
                if matrix_variables.is_empty() {
                    let _ = writeln!(out, "{}: {{}}", scalar(&leg));
                    continue;
                }
                let _ = writeln!(out, "{}:", scalar(&leg));
                for (name, value) in matrix_variables {
                    line(out, i + 6, name, value);
                }
            }
        } else {
            line(
                out,
                i + 2,
                "parallel",
                &job.strategy.total_jobs_in_phase.to_string(),
            );
        }
        if job.strategy.max_parallel > 0 {
            line(
                out,
                i + 2,
                "maxParallel",
                &job.strategy.max_parallel.to_string(),
            );
        }
    }
    if let Some(pool) = &job.pool {
        write_pool(out, i, pool);
    }
    if job.timeout_in_minutes != 60 {
        line(
            out,
            i,
            "timeoutInMinutes",
            &job.timeout_in_minutes.to_string(),
        );
    }
    if job.cancel_timeout_in_minutes != 5 {
        line(
            out,
            i,
            "cancelTimeoutInMinutes",
            &job.cancel_timeout_in_minutes.to_string(),
        );
    }
    if job.continue_on_error {
        line(out, i, "continueOnError", "true");
    }
    // Runtime expressions replace the defaults written above (which they keep until evaluated).
    for (key, expression) in &job.runtime_fields {
        line(out, i, key, expression);
    }
    if let Some(container) = &job.container {
        json_entry(out, i, "container", container);
    }
    if !job.services.is_empty() {
        let map: serde_json::Map<String, serde_json::Value> =
            job.services.clone().into_iter().collect();
        json_entry(out, i, "services", &serde_json::Value::Object(map));
    }
    if let Some(clean) = &job.workspace_clean {
        indent(out, i);
        out.push_str("workspace:\n");
        line(out, i + 2, "clean", clean);
    }
    if let Some(uses) = &job.uses {
        json_entry(out, i, "uses", uses);
    }
    if let Some(context) = &job.template_context {
        json_entry(out, i, "templateContext", context);
    }
    let own_variables: Vec<Variable> = job.job_variables().cloned().collect();
    variables(out, i, &own_variables);
    if let Some(environment) = &job.environment {
        indent(out, i);
        out.push_str("environment:\n");
        line(out, i + 2, "name", &environment.name);
        for (k, v) in [
            ("resourceName", &environment.resource_name),
            ("resourceType", &environment.resource_type),
            ("resourceId", &environment.resource_id),
        ] {
            if let Some(v) = v {
                line(out, i + 2, k, v);
            }
        }
        list(out, i + 2, "tags", &environment.tags);
    }
    if let Some(strategy) = &job.deployment {
        indent(out, i);
        out.push_str("strategy:\n");
        indent(out, i + 2);
        let _ = writeln!(out, "{}:", strategy.name);
        if let Some(max) = &strategy.max_parallel {
            line(out, i + 4, "maxParallel", max);
        }
        if !strategy.increments.is_empty() {
            let increments: Vec<String> = strategy.increments.iter().map(u32::to_string).collect();
            list(out, i + 4, "increments", &increments);
        }
        // Canary repeats the hooks per increment; each hook is printed once, as written.
        let mut seen: Vec<&str> = Vec::new();
        let mut wrote_on = false;
        for phase in &strategy.phases {
            if seen.contains(&phase.hook.as_str()) {
                continue;
            }
            seen.push(&phase.hook);
            let (hook_indent, hook_name) = match phase.hook.strip_prefix("on.") {
                Some(outcome) => {
                    if !wrote_on {
                        indent(out, i + 4);
                        out.push_str("on:\n");
                        wrote_on = true;
                    }
                    (i + 6, outcome)
                }
                None => (i + 4, phase.hook.as_str()),
            };
            indent(out, hook_indent);
            let _ = writeln!(out, "{hook_name}:");
            if let Some(pool) = phase
                .pool
                .as_ref()
                .filter(|p| Some(*p) != job.pool.as_ref())
            {
                write_pool(out, hook_indent + 2, pool);
            }
            write_steps(out, hook_indent + 2, &phase.steps);
        }
    }
    if job.kind != JobKind::Deployment {
        write_steps(out, i, &job.steps);
    }
}

fn write_steps(out: &mut String, i: usize, steps: &[Step]) {
    indent(out, i);
    if steps.is_empty() {
        out.push_str("steps: []\n");
        return;
    }
    out.push_str("steps:\n");
    for step in steps {
        indent(out, i);
        match (&step.task, &step.value) {
            (Some(task), _) => {
                let _ = writeln!(out, "- task: {}@{}", task.name, task.major);
            }
            (None, Some(value)) => {
                out.push_str("- ");
                out.push_str(step.kind.key());
                out.push(':');
                block_or_scalar(out, i + 4, value);
            }
            (None, None) => {
                let _ = writeln!(out, "- {}: ''", step.kind.key());
            }
        }
        let j = i + 2;
        for (key, value) in [
            ("name", &step.name),
            ("displayName", &step.display_name),
            ("condition", &step.condition),
            ("workingDirectory", &step.working_directory),
        ] {
            if let Some(value) = value {
                line(out, j, key, value);
            }
        }
        if !step.enabled {
            line(out, j, "enabled", "false");
        }
        if step.continue_on_error {
            line(out, j, "continueOnError", "true");
        }
        if step.fail_on_stderr {
            line(out, j, "failOnStderr", "true");
        }
        if let Some(t) = step.timeout_in_minutes {
            line(out, j, "timeoutInMinutes", &t.to_string());
        }
        if let Some(r) = step.retry_count_on_task_failure {
            line(out, j, "retryCountOnTaskFailure", &r.to_string());
        }
        if let Some(target) = &step.target {
            indent(out, j);
            out.push_str("target:\n");
            if let Some(c) = &target.container {
                line(out, j + 2, "container", c);
            }
            if let Some(c) = &target.commands {
                line(out, j + 2, "commands", c);
            }
            if let Some(s) = &target.settable_variables {
                list(out, j + 2, "settableVariables", s);
            }
        }
        if !step.inputs.is_empty() {
            let nested = step.kind == StepKind::Task || step.kind == StepKind::DownloadBuild;
            if nested {
                indent(out, j);
                out.push_str("inputs:\n");
            }
            let k = if nested { j + 2 } else { j };
            for (key, value) in &step.inputs {
                indent(out, k);
                out.push_str(&scalar(key));
                out.push(':');
                block_or_scalar(out, k + 2, value);
            }
        }
        if !step.env.is_empty() {
            indent(out, j);
            out.push_str("env:\n");
            for (key, value) in &step.env {
                line(out, j + 2, key, value);
            }
        }
    }
}

fn variables(out: &mut String, i: usize, variables: &[Variable]) {
    if variables.is_empty() {
        return;
    }
    indent(out, i);
    out.push_str("variables:\n");
    for variable in variables {
        indent(out, i);
        match variable {
            Variable::Value {
                name,
                value,
                readonly,
                ..
            } => {
                let _ = writeln!(out, "- name: {}", scalar(name));
                line(out, i + 2, "value", value);
                if *readonly {
                    line(out, i + 2, "readonly", "true");
                }
            }
            Variable::Group { name, .. } => {
                let _ = writeln!(out, "- group: {}", scalar(name));
            }
        }
    }
}

fn write_pool(out: &mut String, i: usize, pool: &Pool) {
    if pool.server {
        line(out, i, "pool", "server");
        return;
    }
    indent(out, i);
    out.push_str("pool:\n");
    if let Some(name) = &pool.name {
        line(out, i + 2, "name", name);
    }
    if let Some(image) = &pool.vm_image {
        line(out, i + 2, "vmImage", image);
    }
    list(out, i + 2, "demands", &pool.demands);
}

fn indent(out: &mut String, i: usize) {
    out.extend(std::iter::repeat_n(' ', i));
}

fn line(out: &mut String, i: usize, key: &str, value: &str) {
    indent(out, i);
    out.push_str(&scalar(key));
    out.push(':');
    block_or_scalar(out, i + 2, value);
}

fn list(out: &mut String, i: usize, key: &str, items: &[String]) {
    if items.is_empty() {
        return;
    }
    indent(out, i);
    let rendered: Vec<String> = items.iter().map(|s| scalar(s)).collect();
    let _ = writeln!(out, "{}: [{}]", scalar(key), rendered.join(", "));
}

/// Writes ` value\n`, or a literal block for multi-line text.
fn block_or_scalar(out: &mut String, i: usize, value: &str) {
    if value.contains('\n') && !value.contains('\r') && !value.starts_with([' ', '\t']) {
        out.push_str(if value.ends_with('\n') {
            " |\n"
        } else {
            " |-\n"
        });
        for text_line in value.trim_end_matches('\n').split('\n') {
            if !text_line.is_empty() {
                indent(out, i);
                out.push_str(text_line);
            }
            out.push('\n');
        }
    } else {
        out.push(' ');
        out.push_str(&scalar(value));
        out.push('\n');
    }
}

/// A scalar written plain when that reads back as the same string, else double-quoted.
fn scalar(text: &str) -> String {
    let plain_ok = !text.is_empty()
        && !text.starts_with(|c: char| c.is_whitespace() || "-?:,[]{}#&*!|>'\"%@`".contains(c))
        && !text.ends_with(char::is_whitespace)
        && !text.contains(": ")
        && !text.contains(" #")
        && !text.contains(['\n', '\r', '\t'])
        && !text.ends_with(':')
        && !matches!(
            crate::template::plain_scalar_value(text),
            lockgate_expr::Value::Null
        );
    if plain_ok {
        text.to_string()
    } else {
        serde_json::to_string(text).unwrap_or_default()
    }
}

fn json_entry(out: &mut String, i: usize, key: &str, value: &serde_json::Value) {
    indent(out, i);
    out.push_str(&scalar(key));
    out.push(':');
    match value {
        serde_json::Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            for (k, v) in map {
                json_entry(out, i + 2, k, v);
            }
        }
        serde_json::Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            for item in items {
                indent(out, i);
                out.push_str("- ");
                json_item(out, i + 2, item);
            }
        }
        other => {
            out.push(' ');
            out.push_str(&json_scalar(other));
            out.push('\n');
        }
    }
}

fn json_item(out: &mut String, i: usize, value: &serde_json::Value) {
    match value {
        serde_json::Value::Object(map) if !map.is_empty() => {
            let mut first = true;
            for (k, v) in map {
                if !first {
                    indent(out, i);
                }
                first = false;
                json_entry_inline(out, i, k, v);
            }
        }
        serde_json::Value::Array(items) if !items.is_empty() => {
            let mut first = true;
            for item in items {
                if !first {
                    indent(out, i);
                }
                first = false;
                out.push_str("- ");
                json_item(out, i + 2, item);
            }
        }
        other => {
            out.push_str(&json_scalar(other));
            out.push('\n');
        }
    }
}

fn json_entry_inline(out: &mut String, i: usize, key: &str, value: &serde_json::Value) {
    let mut tmp = String::new();
    json_entry(&mut tmp, i, key, value);
    out.push_str(tmp.trim_start_matches(' '));
}

fn json_scalar(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => {
            // A JSON string must read back as a string, not as a number or boolean.
            if matches!(
                crate::template::plain_scalar_value(s),
                lockgate_expr::Value::String(_)
            ) {
                scalar(s)
            } else {
                serde_json::to_string(s).unwrap_or_default()
            }
        }
        serde_json::Value::Object(_) => "{}".into(),
        serde_json::Value::Array(_) => "[]".into(),
        other => other.to_string(),
    }
}
