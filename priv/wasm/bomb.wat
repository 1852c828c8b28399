;; Deliberately bad: every call grows memory a page at a time until growing fails, then
;; traps. The memory cap stops it.
(module
  (memory (export "memory") 1)
  (func (export "symbiont_abi_version") (result i32) (i32.const 1))
  (func (export "symbiont_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "symbiont_handle") (param i32 i32) (result i64)
    (loop $more
      (br_if $more (i32.ge_s (memory.grow (i32.const 1)) (i32.const 0))))
    (unreachable)))
