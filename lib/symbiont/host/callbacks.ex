defmodule Symbiont.Host.Callbacks do
  @moduledoc """
  Calls the other way: what a host's process asks of the node (PROTOCOL.md §4.1, host →
  owner), its calls, casts and messages, run for it by its owner.

  Each call and cast runs in a task under `Symbiont.TaskSupervisor`, so that the owner
  never waits on the code it runs (`Symbiont.Host.Erlang` applies it); a call's result
  comes back to the owner as `{:erlang_result, port, id, result}` and goes to the process
  as a `reply` or `error` frame, unless the process it was for is gone. A call may be
  cancelled (`cancel`, its task is killed). At most 10,000 calls run at once: each
  waits in a thread of the process, so only a runaway one gets near, and past it the
  process is stopped for a protocol error.

  A cast's share of the process's window (§8.2) goes back once it has run
  (`{:cast_done, port, size}`); a message's once it is sent (`Symbiont.Host.Frames`).

  Every function takes and returns the owner's state; they run in the owner's process.
  """

  alias Symbiont.Host.{Erlang, Frames, Logs, State}

  # Calls from the process to the node running at once (PROTOCOL.md §4.1).
  @max_calls 10_000

  @doc "A `cast` frame: `m.f(args)` runs in a task; a failure is logged, never answered."
  @spec cast(State.t(), String.t(), String.t(), list, non_neg_integer) :: State.t()
  def cast(state, m, f, args, size) do
    name = state.name
    host = self()
    done = if state.credit, do: {:cast_done, state.port, size}

    Task.Supervisor.start_child(Symbiont.TaskSupervisor, fn ->
      with {:error, error} <- Erlang.apply(m, f, args) do
        Symbiont.Host.log(
          :warning,
          "cast from host #{inspect(name)} to #{m}.#{f} failed: #{error["message"]}"
        )
      end

      if done, do: send(host, done)
    end)

    state
  end

  @doc "A cast of the current process has run: its share of the window goes back (§8.2)."
  @spec cast_done(State.t(), non_neg_integer) :: State.t()
  def cast_done(state, size), do: Frames.handled_own(state, 1, size)

  @doc """
  A `call` frame: `m.f(args)` runs in a task, which sends the owner its result. Too many
  running at once is a protocol error, `{:error, reason, state}`.
  """
  @spec call(State.t(), non_neg_integer, String.t(), String.t(), list) ::
          State.t() | {:error, term, State.t()}
  def call(state, _id, _m, _f, _args) when map_size(state.tasks) >= @max_calls,
    do: {:error, {:too_many_calls, @max_calls}, state}

  def call(state, id, m, f, args) do
    host = self()
    port = state.port

    {:ok, pid} =
      Task.Supervisor.start_child(Symbiont.TaskSupervisor, fn ->
        send(host, {:erlang_result, port, id, Erlang.apply(m, f, args)})
      end)

    %{state | tasks: Map.put(state.tasks, id, pid)}
  end

  @doc """
  The result of call `id` of the current process, sent back to it as a `reply` or an
  `error` frame (an error frame too when the result cannot be encoded).
  """
  @spec result(State.t(), non_neg_integer, {:ok, term} | {:error, map}) :: State.t()
  def result(state, id, result) do
    state = %{state | tasks: Map.delete(state.tasks, id)}

    frame =
      case result do
        {:ok, value} -> ["reply", id, value]
        {:error, error} -> ["error", id, error]
      end

    case Frames.encode(state, frame) do
      {:ok, iodata} ->
        Frames.emit(state, iodata)

      {:error, reason} ->
        error = %{
          "type" => "error",
          "message" => "cannot encode the result: #{inspect(reason)}",
          "traceback" => ""
        }

        Frames.send_frame(state, ["error", id, error])
    end
  end

  @doc "A `msg` frame: `value` is sent to `dest`; to an unknown one, dropped with a warning."
  @spec msg(State.t(), term, term) :: State.t()
  def msg(state, dest, value) do
    case Erlang.resolve_destination(dest) do
      {:ok, pid} ->
        send(pid, value)

      :error ->
        Symbiont.Host.log(
          :warning,
          "message from host #{inspect(state.name)} to unknown destination #{inspect(dest)} dropped",
          Logs.meta(state)
        )
    end

    state
  end

  @doc "A `cancel` frame: the task of call `id`, if it still runs, is killed."
  @spec cancel(State.t(), non_neg_integer) :: State.t()
  def cancel(state, id) do
    case Map.pop(state.tasks, id) do
      {nil, _} ->
        state

      {pid, tasks} ->
        Process.exit(pid, :kill)
        %{state | tasks: tasks}
    end
  end
end
