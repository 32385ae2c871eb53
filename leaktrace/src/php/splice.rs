//! Putting PHP frames among the native ones (pure). The PHP VM runs a chain of PHP calls
//! inside one native `execute_ex` and enters a new `execute_ex` only when C code calls back
//! into PHP (`zend_call_function`); the first frame each `execute_ex` runs is flagged
//! `ZEND_CALL_TOP`. So, innermost first, each `execute_ex` frame is preceded by the PHP
//! frames it runs: from where the previous one stopped up to its top frame.

use crate::model::Frame;

/// A named PHP frame and whether it is the first its `execute_ex` runs.
#[derive(Clone, Debug, PartialEq)]
pub struct PhpFrame {
    /// The frame as reports show it (`kind: php`).
    pub frame: Frame,
    /// `ZEND_CALL_TOP`.
    pub top: bool,
}

/// The native function that runs PHP frames.
const VM_LOOP: &str = "execute_ex";

/// Native functions the PHP frames sit above when no `execute_ex` frame is in the stack (an
/// extension replaced it, or its frame was not unwound).
const VM_ENTRIES: &[&str] = &["zend_execute", "zend_call_function", "zend_execute_scripts", "php_execute_script"];

fn named(frame: &Frame, names: &[&str]) -> bool {
    !frame.inlined && frame.symbol.as_deref().is_some_and(|s| names.contains(&s))
}

/// `native` (innermost first) with the PHP frames (innermost first) put in front of the VM
/// frames that run them. Frames left over (a stack cut short) go at the outer end.
pub fn splice(native: Vec<Frame>, php: &[PhpFrame]) -> Vec<Frame> {
    if php.is_empty() {
        return native;
    }
    let mut out = Vec::with_capacity(native.len() + php.len());
    let mut rest = php.iter();
    let has_loop = native.iter().any(|f| named(f, &[VM_LOOP]));
    for frame in native {
        if has_loop && named(&frame, &[VM_LOOP]) {
            for p in rest.by_ref() {
                out.push(p.frame.clone());
                if p.top {
                    break;
                }
            }
        } else if !has_loop && named(&frame, VM_ENTRIES) {
            out.extend(rest.by_ref().map(|p| p.frame.clone()));
        }
        out.push(frame);
    }
    out.extend(rest.map(|p| p.frame.clone()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::FrameKind;

    fn native(symbol: &str) -> Frame {
        Frame {
            address: 0x1000,
            module: Some("/usr/bin/php8.2".into()),
            symbol: Some(symbol.into()),
            ..Frame::default()
        }
    }

    fn php(symbol: &str, top: bool) -> PhpFrame {
        PhpFrame { frame: Frame { symbol: Some(symbol.into()), kind: Some(FrameKind::Php), ..Frame::default() }, top }
    }

    fn names(frames: &[Frame]) -> Vec<&str> {
        frames.iter().map(|f| f.symbol.as_deref().unwrap_or("?")).collect()
    }

    #[test]
    fn each_execute_ex_gets_the_frames_up_to_its_top_frame() {
        // A callback run by array_map: two execute_ex, each running its own part of the chain.
        let stack =
            ["malloc_caller", "execute_ex", "zend_call_function", "zif_array_map", "execute_ex", "zend_execute"];
        let chain = [php("{closure}", true), php("array_map", false), php("Job::handle", false), php("{main}", true)];
        let spliced = splice(stack.iter().map(|s| native(s)).collect(), &chain);
        assert_eq!(
            names(&spliced),
            [
                "malloc_caller",
                "{closure}",
                "execute_ex",
                "zend_call_function",
                "zif_array_map",
                "array_map",
                "Job::handle",
                "{main}",
                "execute_ex",
                "zend_execute"
            ]
        );
    }

    #[test]
    fn without_execute_ex_the_frames_go_above_the_vm_entry_or_at_the_end() {
        let chain = [php("f", false), php("{main}", true)];
        let spliced = splice(["leaf", "xdebug_execute_ex", "zend_execute", "main"].map(native).to_vec(), &chain);
        assert_eq!(names(&spliced), ["leaf", "xdebug_execute_ex", "f", "{main}", "zend_execute", "main"]);
        let spliced = splice(["leaf", "other"].map(native).to_vec(), &chain);
        assert_eq!(names(&spliced), ["leaf", "other", "f", "{main}"]);
        assert_eq!(names(&splice(["leaf"].map(native).to_vec(), &[])), ["leaf"]);
    }
}
