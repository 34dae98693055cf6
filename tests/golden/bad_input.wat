;; RUN: inspect %wat
;; RUN: run --points no_such_function %
;; RUN: run --points all,work %
;; RUN: run %.missing
;; RUN: analyze --policy %wat %
;; RUN: faults --programs panic --corpus no-such-dir
;; RUN: bench paper --apps behavior-profile --modules no-such-dir
;; What a user who gets the input wrong is told: a text module where a binary is expected, a
;; point that names no function, `all` mixed with names, a file that does not exist, a policy
;; that does not parse, developer tools run where their programs were not built.
(module
  (func $work (export "_start")))
