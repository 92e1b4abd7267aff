//! Spin's `fermyon:spin/variables@2.0.0` interface, with values from the command line
//! and the environment.

use wasmtime::component::{HasSelf, Linker};

use crate::RequestState;

wasmtime::component::bindgen!({
    inline: "
        package fermyon:spin@2.0.0;

        interface variables {
            get: func(name: string) -> result<string, error>;

            variant error {
                invalid-name(string),
                undefined(string),
                provider(string),
                other(string),
            }
        }

        world spin-variables {
            import variables;
        }
    ",
});

use fermyon::spin::variables::{Error, Host};

/// Adds the variables interface to `linker`.
pub fn add_to_linker(linker: &mut Linker<RequestState>) -> wasmtime::Result<()> {
    fermyon::spin::variables::add_to_linker::<RequestState, HasSelf<RequestState>>(
        linker,
        |state| state,
    )
}

impl Host for RequestState {
    fn get(&mut self, name: String) -> Result<String, Error> {
        if !is_valid_name(&name) {
            return Err(Error::InvalidName(format!(
                "{name:?} is not a valid variable name: use lowercase letters, digits and \
                 underscores, starting with a letter"
            )));
        }
        self.variables
            .get(&name)
            .cloned()
            .ok_or_else(|| Error::Undefined(format!("variable {name:?} is not set")))
    }
}

/// Checks that a variable name is lowercase ASCII letters, digits and underscores,
/// starting with a letter, the form of variable names in Spin manifests.
fn is_valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    bytes.first().is_some_and(u8::is_ascii_lowercase)
        && bytes
            .iter()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || *byte == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variable_names_are_validated() {
        assert!(is_valid_name("gatehouse_config"));
        assert!(is_valid_name("a1"));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name("Gatehouse"));
        assert!(!is_valid_name("1a"));
        assert!(!is_valid_name("a-b"));
    }
}
