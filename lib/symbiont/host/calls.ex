defmodule Symbiont.Host.Calls do
  @moduledoc """
  Calls one way: what the node asks of a host's process (PROTOCOL.md §4, owner → host),
  the calls, casts and messages of `Symbiont.Python`, and their answers.

  Each call gets an id and a timer (its timeout, else the host's `:call_timeout`) and
  waits in `pending` for its `reply` or `error` frame; one that times out is answered
  `{:error, :timeout}` and cancelled in the process (`cancel`). What arrives while the
  process is (re)starting waits in order in `waiting` and is written once it is ready
  (`flush/1`), so nothing accepted is lost across a restart: a crash fails the calls
  that were written to the dead process (`fail/2`) and keeps the others (`unsent/1`).

  Every function takes and returns the owner's state; they run in the owner's process.
  """

  alias Symbiont.Host.{Frames, Logs, State}

  @doc """
  A call `{:call, module, function, args, timeout}` from `from`: written now to a ready
  process, else queued; `{:reply, error, state}` when its frame cannot be encoded.
  """
  @spec call(State.t(), tuple, GenServer.from()) ::
          {:noreply, State.t()} | {:reply, term, State.t()}
  def call(state, {:call, m, f, args, timeout}, from) do
    id = state.next_id
    state = %{state | next_id: id + 1}

    case Frames.encode(state, ["call", id, m, f, args]) do
      {:ok, frame} ->
        timer =
          Process.send_after(self(), {:call_timeout, id}, timeout || state.config.call_timeout)

        if state.status == :ready do
          state = Frames.emit(state, frame)
          {:noreply, put_in(state.pending[id], {from, timer, true})}
        else
          state = %{state | waiting: :queue.in({id, frame}, state.waiting)}
          {:noreply, put_in(state.pending[id], {from, timer, false})}
        end

      {:error, reason} ->
        {:reply, {:error, reason}, state}
    end
  end

  @doc """
  A cast or a message (`frame`) for the process: written now to a ready process, else
  queued; one that cannot be encoded is dropped and logged.
  """
  @spec send_or_queue(State.t(), list) :: State.t()
  def send_or_queue(state, frame) do
    case Frames.encode(state, frame) do
      {:ok, iodata} ->
        if state.status == :ready do
          Frames.emit(state, iodata)
        else
          %{state | waiting: :queue.in({nil, iodata}, state.waiting)}
        end

      {:error, reason} ->
        Symbiont.Host.log(
          :error,
          "dropped #{hd(frame)} to host #{inspect(state.name)}: #{inspect(reason)}",
          Logs.meta(state)
        )

        state
    end
  end

  @doc "Call `id` timed out: its caller gets `{:error, :timeout}`, a written one is cancelled."
  @spec timeout(State.t(), non_neg_integer) :: State.t()
  def timeout(state, id) do
    case Map.pop(state.pending, id) do
      {nil, _} ->
        state

      {{from, _timer, sent?}, pending} ->
        state =
          if sent? and state.status == :ready,
            do: Frames.send_frame(state, ["cancel", id]),
            else: state

        GenServer.reply(from, {:error, :timeout})
        %{state | pending: pending}
    end
  end

  @doc "The answer to call `id` (a late one, after its timeout, is dropped)."
  @spec answer(State.t(), non_neg_integer, {:ok, term} | {:error, term}) :: State.t()
  def answer(state, id, result) do
    case Map.pop(state.pending, id) do
      {{from, timer, _sent}, pending} ->
        Process.cancel_timer(timer)
        GenServer.reply(from, result)
        %{state | pending: pending}

      {nil, _} ->
        Symbiont.Host.log(
          :debug,
          fn -> "host #{inspect(state.name)}: late reply to call #{id} dropped" end,
          Logs.meta(state)
        )

        state
    end
  end

  @doc "The process is ready: what waited for it is written, calls and casts in order."
  @spec flush(State.t()) :: State.t()
  def flush(state) do
    state =
      for {id, frame} <- :queue.to_list(state.waiting),
          id == nil or Map.has_key?(state.pending, id),
          reduce: state,
          do: (state -> Frames.emit(state, frame))

    pending = Map.new(state.pending, fn {id, {from, timer, _}} -> {id, {from, timer, true}} end)
    %{state | waiting: :queue.new(), pending: pending}
  end

  @doc "Fails the calls written to the process (it is gone): each caller gets `{:error, reason}`."
  @spec fail(State.t(), term) :: :ok
  def fail(state, reason) do
    for {_id, {from, timer, true}} <- state.pending do
      Process.cancel_timer(timer)
      GenServer.reply(from, {:error, reason})
    end

    :ok
  end

  @doc "The calls not written yet: they wait for the next process."
  @spec unsent(State.t()) :: State.t()
  def unsent(state),
    do: Map.filter(state.pending, fn {_id, {_from, _timer, sent?}} -> not sent? end)
end
