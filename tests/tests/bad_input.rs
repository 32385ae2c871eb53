//! Bad input gets one clear line on stderr and a non-zero exit, never a panic.

use std::process::Command;

use leaktrace_integration_tests::*;

#[test]
fn nonexistent_pid() {
    require_root();
    assert_one_line_error(&run_leaktrace(&["-p", "4194305"]), "no process with pid 4194305");
}

#[test]
fn kernel_thread() {
    require_root();
    assert_one_line_error(&run_leaktrace(&["-p", "2"]), "kernel thread");
}

#[test]
fn conflicting_target_flags() {
    let output = run_leaktrace(&["-p", "1", "--", "true"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(!String::from_utf8_lossy(&output.stderr).contains("panicked"));
}

#[test]
fn min_size_above_max_size() {
    assert_one_line_error(&run_leaktrace(&["-z", "100", "-Z", "10", "--", "true"]), "--min-size");
}

#[test]
fn nothing_to_trace() {
    assert_one_line_error(&run_leaktrace(&[]), "nothing to trace");
}

#[test]
fn unwritable_json_path_fails_before_attaching() {
    require_root();
    let output = run_leaktrace(&["--json", "/nonexistent-dir/report.json", "--", leaky().to_str().unwrap()]);
    assert_one_line_error(&output, "/nonexistent-dir/report.json");
    // Checked before launching: the fixture never ran.
    assert!(!String::from_utf8_lossy(&output.stdout).contains("TRUTH"));
}

#[test]
fn command_not_found() {
    require_root();
    assert_one_line_error(&run_leaktrace(&["--", "/no/such/program"]), "cannot run /no/such/program");
}

#[test]
fn executable_whose_dynamic_linker_is_missing() {
    require_root();
    let fixture =
        build_fixture("short_lived.c", "short-lived-bad-interp", &["-O1", "-Wl,--dynamic-linker=/no/such/ld.so"]);
    assert_one_line_error(
        &run_leaktrace(&["--", fixture.to_str().unwrap()]),
        "dynamic linker /no/such/ld.so does not exist",
    );
}

#[test]
fn stripped_static_binary_without_allocator_symbols() {
    require_root();
    let fixture = build_fixture("leaky.c", "leaky-static-stripped", &["-O1", "-static", "-s", "-pthread"]);
    let output = run_leaktrace(&["--", fixture.to_str().unwrap()]);
    assert_one_line_error(&output, "-O/--obj");
    assert!(!String::from_utf8_lossy(&output.stdout).contains("TRUTH"), "the command must not run untraced");
}

#[test]
fn malformed_elf_given_with_obj() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("libjunk.so");
    std::fs::write(&junk, b"\x7fELF but not really").unwrap();
    assert_one_line_error(&run_leaktrace(&["-O", junk.to_str().unwrap(), "--", "true"]), "not a readable ELF");
}

#[test]
fn object_without_the_allocator_symbols_names_them() {
    require_root();
    let output = run_leaktrace(&["-O", "/bin/true", "--symbols-prefix", "je_", "--", "true"]);
    assert_one_line_error(&output, "je_malloc");
}

#[test]
fn not_root() {
    require_root();
    // setpriv (util-linux) drops to nobody with no capabilities.
    let output = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"])
        .arg(leaktrace_bin())
        .args(["--", "true"])
        .output()
        .expect("setpriv runs");
    assert_one_line_error(&output, "needs root");
}

#[test]
fn php_heap_alone_in_a_program_without_php() {
    require_root();
    let output = run_leaktrace(&["--heap", "php", "--", "true"]);
    assert_one_line_error(&output, "--heap php: it maps no PHP binary");
}

#[test]
fn unknown_heap() {
    let output = run_leaktrace(&["--heap", "jvm", "--", "true"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("invalid value 'jvm' for '--heap <HEAP>'") && !stderr.contains("panicked"), "{stderr}");
}
