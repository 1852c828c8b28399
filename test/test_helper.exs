# The multi-node tests need this node distributed. It goes distributed here, before the
# test files compile: a node that turns distributed while the parallel compiler runs
# leaves the compiler's processes behind a node name that no longer exists.
Symbiont.Cluster.ensure_distributed!()
# Durable agents' journals of this run (config/test.exs).
# And the cookie's directory of peer nodes, if a test made one.
ExUnit.after_suite(fn _ ->
  File.rm_rf(Symbiont.Journal.data_dir())
  Symbiont.Cluster.remove_cookie_home()
end)

# A message that is due arrives within a second even on a loaded machine (the default 100
# ms made cross-node assert_receive flaky under load); refute_receive keeps its 100 ms.
ExUnit.start(assert_receive_timeout: 1_000)
