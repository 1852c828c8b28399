;; Deliberately bad: every call loops forever. The deadline interrupts it.
(module
  (memory (export "memory") 1)
  (func (export "symbiont_abi_version") (result i32) (i32.const 1))
  (func (export "symbiont_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "symbiont_handle") (param i32 i32) (result i64)
    (loop $forever (br $forever))
    (i64.const 0)))
