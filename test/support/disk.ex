defmodule Symbiont.Disk do
  @moduledoc false
  # A real full disk for the tests tagged :tmpfs: a tiny tmpfs mounted for the test (root
  # only; test_helper.exs leaves those tests out, and says why, where it cannot mount one).

  import ExUnit.Assertions

  @doc """
  Mounts a tmpfs of `size` (`mount -o size=`, e.g. "1m") on `dir` (created), unmounted
  when the test ends, after every `on_exit` registered later (those run first).
  """
  def mount_tmpfs!(dir, size) do
    File.mkdir_p!(dir)
    args = ["-t", "tmpfs", "-o", "size=#{size}", "tmpfs", dir]

    case System.cmd("mount", args, stderr_to_stdout: true) do
      {_, 0} -> :ok
      {out, status} -> flunk("mount #{Enum.join(args, " ")} failed (exit #{status}): #{out}")
    end

    ExUnit.Callbacks.on_exit(fn ->
      with {_, status} when status != 0 <- System.cmd("umount", [dir], stderr_to_stdout: true),
           do: System.cmd("umount", ["-l", dir], stderr_to_stdout: true)
    end)

    dir
  end

  @doc "Writes zeros to a new file at `path` until the disk refuses; returns the bytes it took."
  def fill!(path) do
    {:ok, f} = :file.open(String.to_charlist(path), [:raw, :binary, :write])
    block = :binary.copy(<<0>>, 4096)

    n =
      Stream.repeatedly(fn -> :file.write(f, block) end)
      |> Enum.take_while(&(&1 == :ok))
      |> length()

    :ok = :file.close(f)
    assert n > 0, "#{path}: the disk was full already"
    n * 4096
  end
end
