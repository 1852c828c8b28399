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

# Tests tagged :telemetry_lib run on the real :telemetry library, compiled in only with
# TELEMETRY_PATH (`make test-telemetry`, mix.exs).
unless Code.ensure_loaded?(:telemetry), do: ExUnit.configure(exclude: [:telemetry_lib])

# Tests tagged :root act as another user (chown); they need root.
if System.cmd("id", ["-u"]) != {"0\n", 0} do
  IO.puts("Skipping the :root tests (they chown a file to another user): not running as root")
  ExUnit.configure(exclude: [:root])
end

# Tests tagged :tmpfs mount a tiny tmpfs to fill a real disk (test/symbiont/disk_full_test.exs).
# That needs root (CAP_SYS_ADMIN): where a probe mount fails they are left out, and this says why.
tmpfs_probe = Path.join(System.tmp_dir!(), "symbiont-tmpfs-probe-#{System.pid()}")
File.mkdir_p!(tmpfs_probe)

case System.cmd("mount", ["-t", "tmpfs", "-o", "size=64k", "tmpfs", tmpfs_probe],
       stderr_to_stdout: true
     ) do
  {_, 0} ->
    System.cmd("umount", [tmpfs_probe], stderr_to_stdout: true)

  {out, status} ->
    IO.puts(
      "Skipping the :tmpfs tests (a full disk on a real tmpfs): `mount -t tmpfs` is not permitted here " <>
        "(exit #{status}: #{String.trim(out)}); run the suite as root to include them."
    )

    ExUnit.configure(exclude: [:tmpfs])
end

File.rmdir(tmpfs_probe)
