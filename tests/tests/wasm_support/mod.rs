//! Components made by hand for tests that need what no compiler emits: a
//! component costly to compile, and a real plugin with a core instance of
//! our own added (a table bomb). Written with wasm-encoder, read with
//! wasmparser.
#![allow(dead_code)]

use wasm_encoder::{
    CodeSection, Component, ComponentSectionId, Function, FunctionSection, InstanceSection, Instruction, Module,
    ModuleArg, ModuleSection, RawSection, TypeSection, ValType,
};

/// A component of `functions` functions of `ops` additions each: a few MB
/// of wasm that the compiler needs far more memory and time for than its
/// size (its memory grows with the largest function, its time with all).
pub fn costly_component(functions: u32, ops: usize) -> Vec<u8> {
    let mut types = TypeSection::new();
    types.ty().function([ValType::I32], [ValType::I32]);
    let mut declared = FunctionSection::new();
    let mut code = CodeSection::new();
    let mut body = Function::new([(1, ValType::I32)]);
    for _ in 0..ops {
        body.instruction(&Instruction::LocalGet(0))
            .instruction(&Instruction::LocalGet(1))
            .instruction(&Instruction::I32Add)
            .instruction(&Instruction::LocalSet(1));
    }
    body.instruction(&Instruction::LocalGet(1)).instruction(&Instruction::End);
    for _ in 0..functions {
        declared.function(0);
        code.function(&body);
    }
    let mut module = Module::new();
    module.section(&types).section(&declared).section(&code);
    let mut component = Component::new();
    component.section(&ModuleSection(&module));
    component.finish()
}

/// `component` with `module` added and instantiated as part of it: a core
/// module section and a core instance section appended, so the plugin's
/// exports stay whole and its instantiation builds `module` too.
pub fn with_core_instance(component: &[u8], module: &[u8]) -> Vec<u8> {
    let mut extra = Component::new();
    extra.section(&RawSection { id: ComponentSectionId::CoreModule as u8, data: module });
    let mut instance = InstanceSection::new();
    instance.instantiate(top_level_modules(component), std::iter::empty::<(&str, ModuleArg)>());
    extra.section(&instance);
    // The new sections, without the header `Component` starts with.
    let extra = extra.finish();
    [component, &extra[8..]].concat()
}

/// Core modules defined at the top level of `component`: the next one's index.
fn top_level_modules(component: &[u8]) -> u32 {
    let (mut depth, mut modules) = (0usize, 0u32);
    for payload in wasmparser::Parser::new(0).parse_all(component) {
        match payload.expect("a valid component") {
            wasmparser::Payload::ModuleSection { .. } => {
                modules += u32::from(depth == 0);
                depth += 1;
            }
            wasmparser::Payload::ComponentSection { .. } => depth += 1,
            wasmparser::Payload::End(_) => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    modules
}
