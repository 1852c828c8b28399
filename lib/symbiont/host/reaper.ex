defmodule Symbiont.Host.Reaper do
  @moduledoc false
  # Makes sure a host OS process is gone after its port was closed (PROTOCOL.md §6): a
  # well-behaved host exits on EOF at once; one that does not gets SIGKILL after a grace
  # period. Then what is left of its process group (a host leads one: children it forked
  # or spawned) gets SIGKILL too. Runs in a process of its own so the owner never waits.

  @poll_ms 20

  @spec reap(pos_integer, non_neg_integer) :: pid
  def reap(os_pid, grace_ms) when is_integer(os_pid) do
    spawn(fn -> wait_or_kill(os_pid, System.monotonic_time(:millisecond) + grace_ms) end)
  end

  @doc """
  Closes `port` (EOF on the process's input; a port that is closed already is fine) and
  reaps its process `os_pid` as `reap/2` does. Either may be `nil`.
  """
  @spec close(port | nil, pos_integer | nil, non_neg_integer) :: :ok
  def close(port, os_pid, grace_ms) do
    if port do
      try do
        Port.close(port)
      rescue
        ArgumentError -> :ok
      end
    end

    if os_pid, do: reap(os_pid, grace_ms)
    :ok
  end

  @doc "Whether the OS process is alive (neither gone nor a zombie). Linux only."
  @spec alive?(pos_integer) :: boolean
  def alive?(os_pid) do
    case stat(os_pid) do
      [state | _] -> state not in ["Z", "X"]
      nil -> false
    end
  end

  # The fields of /proc/PID/stat after the command name: state, ppid, pgrp, ... The name
  # is in parentheses and may hold spaces and parentheses itself: it ends at the last ")".
  defp stat(os_pid) do
    with {:ok, stat} <- File.read("/proc/#{os_pid}/stat"),
         [_ | _] = matches <- :binary.matches(stat, ") ") do
      {pos, len} = List.last(matches)
      stat |> binary_part(pos + len, byte_size(stat) - pos - len) |> String.split(" ", parts: 4)
    else
      _ -> nil
    end
  end

  @doc "Sends SIGKILL to an OS process, without a shell."
  @spec kill(pos_integer) :: :ok
  def kill(os_pid) do
    System.cmd("kill", ["-KILL", Integer.to_string(os_pid)], stderr_to_stdout: true)
    :ok
  end

  @doc """
  Sends SIGKILL to what is left of the process group led by `os_pid`, without a shell.
  A group that does not exist (the process led none, or all of it is gone) is fine.
  """
  @spec kill_group(pos_integer) :: :ok
  def kill_group(os_pid) do
    # Most hosts leave no child: look before starting a `kill` process for nothing.
    if group_members(os_pid) != [],
      do: System.cmd("kill", ["-KILL", "--", "-#{os_pid}"], stderr_to_stdout: true)

    :ok
  end

  @doc "The OS pids of the live processes in the process group `pgid`. Linux only."
  @spec group_members(pos_integer) :: [pos_integer]
  def group_members(pgid) do
    case File.ls("/proc") do
      {:ok, entries} ->
        for entry <- entries,
            match?({_, ""}, Integer.parse(entry)),
            [state, _ppid, pgrp | _] <- [stat(entry)],
            state not in ["Z", "X"] and pgrp == Integer.to_string(pgid),
            do: String.to_integer(entry)

      {:error, _} ->
        []
    end
  end

  defp wait_or_kill(os_pid, deadline) do
    cond do
      not alive?(os_pid) ->
        kill_group(os_pid)

      System.monotonic_time(:millisecond) >= deadline ->
        kill(os_pid)
        kill_group(os_pid)

      true ->
        Process.sleep(@poll_ms)
        wait_or_kill(os_pid, deadline)
    end
  end
end
