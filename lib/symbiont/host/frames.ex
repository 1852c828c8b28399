defmodule Symbiont.Host.Frames do
  @moduledoc """
  The frame layer of a host's owner: the bytes its process writes, turned into frames and
  handed to whoever handles each kind, and the frames the owner writes to it.

  Reading: the port's chunks are cut into frames (`Symbiont.Host.Framer`), decoded and
  checked (`Symbiont.Host.Protocol`), counted against the process's flow-control windows
  (PROTOCOL.md §8.2, `Symbiont.Host.Credit`), then dispatched: replies to the node's calls
  (`Symbiont.Host.Calls`), the process's own calls, casts and messages
  (`Symbiont.Host.Callbacks`), its agents' frames (`Symbiont.Host.Slots`), log lines
  (`Symbiont.Host.Logs`), and the handshake (`Symbiont.Host.Launch`). A frame that breaks
  the protocol stops the process (`Symbiont.Host.Crash.protocol_error/2`), and so does a
  process that floods the owner's mailbox (`:max_mailbox`).

  Writing: frames are encoded, held to the largest frame the process accepts, and written
  in batches (`Symbiont.Host.Out`).

  Every function takes and returns the owner's state; they run in the owner's process.
  """

  alias Symbiont.Host.{Callbacks, Calls, Crash, Credit, Framer, Launch, Logs, Out, Protocol}
  alias Symbiont.Host.{Slots, State}
  alias Symbiont.MsgPack

  # How many port messages go by between two counts of the messages waiting in the
  # owner's mailbox while it holds more than :max_mailbox (Symbiont.Config).
  @recount_every 64

  @doc "The count of port messages that makes the first one counted (see `data/2`)."
  @spec recount_every() :: pos_integer
  def recount_every, do: @recount_every

  @doc """
  A chunk of the process's output. A sign of life is a complete frame (PROTOCOL.md §11),
  not a byte: a process stuck after the start of one would otherwise seem alive for as
  long as bytes trickle in.
  """
  @spec data(State.t(), binary) :: State.t()
  def data(state, chunk) do
    with {:ok, state} <- flooding(state),
         {:ok, payloads, framer} <- Framer.feed(state.framer, chunk) do
      case payloads do
        [] ->
          %{state | framer: framer}

        payloads ->
          now = System.monotonic_time(:millisecond)
          state = %{state | framer: framer, heard_at: now, unanswered: 0}
          handle_payloads(payloads, state)
      end
    else
      {:error, reason} -> Crash.protocol_error(state, reason)
    end
  end

  # The last line of defence of the owner's memory (`:max_mailbox`): a port has no input
  # flow control, and frames that need no credit (pongs, late replies, acks of old seqs,
  # logs past the output limit) cost the owner more to decode than the process to write.
  # The length of the mailbox is cheap to read, at each port message; only when it is
  # over the bound are the port's own messages among it counted (a copy of the mailbox,
  # at most once every @recount_every port messages), so that a burst of calls from the
  # node's own processes is never taken for a flood.
  defp flooding(%{since_count: n} = state) when n < @recount_every,
    do: {:ok, %{state | since_count: n + 1}}

  defp flooding(%{config: %{max_mailbox: max}} = state) do
    case Process.info(self(), :message_queue_len) do
      {:message_queue_len, n} when n > max ->
        {:messages, messages} = Process.info(self(), :messages)
        port = state.port
        waiting = Enum.count(messages, &match?({^port, {:data, _}}, &1))

        if waiting > max,
          do: {:error, {:flooding, waiting, max}},
          else: {:ok, %{state | since_count: 0}}

      _ ->
        {:ok, state}
    end
  end

  defp handle_payloads([], state), do: state

  defp handle_payloads([payload | rest], state) do
    with {:ok, frame} <- Protocol.decode(payload),
         {:ok, state} <- charge(state, frame, byte_size(payload)) do
      case handle_frame(frame, byte_size(payload), state) do
        {:error, reason, state} -> Crash.protocol_error(state, reason)
        state -> handle_payloads(rest, settle(state, frame, byte_size(payload)))
      end
    else
      {:error, reason} -> Crash.protocol_error(state, reason)
    end
  end

  ## Flow control (PROTOCOL.md §8.2)

  # What a process sends of a window is counted as it arrives (a process past its window
  # is a protocol error); publishes of a slot no agent runs any more are dropped
  # uncounted.
  defp charge(%{credit: nil} = state, _frame, _size), do: {:ok, state}

  defp charge(state, {:publish, slot, topic, payload, _id}, _size) do
    if Map.has_key?(state.slots, slot),
      do: charge_slot(state, slot, Credit.publish_cost(topic, payload)),
      else: {:ok, state}
  end

  # An agent's health report (§8.3) costs the size of its frame.
  defp charge(state, {:health, slot, _kind, _reason, _metrics}, size) do
    if Map.has_key?(state.slots, slot),
      do: charge_slot(state, slot, size),
      else: {:ok, state}
  end

  defp charge(state, frame, size) when elem(frame, 0) in [:cast, :msg],
    do: charge_slot(state, 0, size)

  defp charge(state, _frame, _size), do: {:ok, state}

  defp charge_slot(state, slot, cost) do
    with {:ok, credit} <- Credit.charge(state.credit, slot, cost),
         do: {:ok, %{state | credit: credit}}
  end

  # A message is handled once sent; a cast once it has run (its task says so).
  defp settle(%{credit: %{}} = state, {:msg, _, _}, size), do: handled_own(state, 1, size)
  defp settle(state, _frame, _size), do: state

  @doc "Casts and messages of the process handled: given back a quarter window at a time."
  @spec handled_own(State.t(), pos_integer, non_neg_integer) :: State.t()
  def handled_own(state, n, size) do
    {frames, bytes} = state.own
    frames = frames + n
    bytes = bytes + size

    if Credit.due?(frames, bytes),
      do: give_back(%{state | own: {0, 0}}, 0, frames, bytes),
      else: %{state | own: {frames, bytes}}
  end

  @doc "Gives `frames` and `bytes` of `slot`'s window back, written at once: a host may be waiting for it."
  @spec give_back(State.t(), non_neg_integer, non_neg_integer, non_neg_integer) :: State.t()
  def give_back(state, slot, frames, bytes) do
    state = %{state | credit: Credit.give_back(state.credit, slot, frames, bytes)}
    state = send_frame(state, ["credit", slot, frames, bytes])
    %{state | out: Out.flush(state.out)}
  end

  ## Dispatch

  defp handle_frame({:cast, m, f, args}, size, %{status: :ready} = state),
    do: Callbacks.cast(state, m, f, args, size)

  # Its agent server gives the report's share of the window back: it needs its size.
  defp handle_frame({:health, slot, kind, reason, metrics}, size, state),
    do: handle_frame({:health, slot, kind, reason, metrics, size}, state)

  defp handle_frame(frame, _size, state), do: handle_frame(frame, state)

  defp handle_frame({:log, level, message}, state), do: Logs.line(state, level, message)

  defp handle_frame({:log, level, message, fields}, state),
    do: Logs.line(state, level, message, fields)

  # Any complete frame counts as a sign of life (heard_at); a pong needs nothing more,
  # unless it says how the process's time went (§11.2): Symbiont.Host.Usage.
  defp handle_frame({:pong, _beat}, state), do: state
  defp handle_frame({:pong, _beat, busy}, state), do: Slots.busy(state, busy)

  defp handle_frame({:ready, version, info}, %{status: :starting} = state) do
    if version == Protocol.version() do
      Launch.ready(state, info)
    else
      {:error, {:version, version}, state}
    end
  end

  defp handle_frame({:fatal, error}, %{status: :starting} = state), do: Logs.fatal(state, error)

  defp handle_frame(frame, %{status: :starting} = state),
    do: {:error, {:before_ready, elem(frame, 0)}, state}

  defp handle_frame(frame, state) when elem(frame, 0) in [:ready, :fatal],
    do: {:error, {:after_ready, elem(frame, 0)}, state}

  defp handle_frame({:reply, id, value}, state), do: Calls.answer(state, id, {:ok, value})

  defp handle_frame({:error, id, error}, state),
    do: Calls.answer(state, id, {:error, Symbiont.Python.Error.from_wire(error)})

  defp handle_frame({:call, id, m, f, args}, state), do: Callbacks.call(state, id, m, f, args)
  defp handle_frame({:msg, dest, value}, state), do: Callbacks.msg(state, dest, value)
  defp handle_frame({:cancel, id}, state), do: Callbacks.cancel(state, id)
  defp handle_frame(frame, state), do: Slots.route(state, frame)

  ## Sending

  @doc "Encodes a frame with its length prefix, refused past the largest frame the process accepts."
  @spec encode(State.t(), list) :: {:ok, iodata} | {:error, term}
  def encode(state, frame) do
    with {:ok, iodata} <- MsgPack.encode(frame) do
      size = IO.iodata_length(iodata)

      if size > state.peer_max_frame,
        do: {:error, {:frame_too_large, size, state.peer_max_frame}},
        else: {:ok, [<<size::32>> | iodata]}
    end
  end

  @doc "Sends a frame to the running process (none: nothing is sent); one that cannot be encoded is logged."
  @spec send_frame(State.t(), list) :: State.t()
  def send_frame(%{port: port} = state, frame) when port != nil do
    case encode(state, frame) do
      {:ok, iodata} ->
        emit(state, iodata)

      {:error, reason} ->
        Symbiont.Host.log(
          :error,
          "cannot send #{hd(frame)} frame: #{inspect(reason)}",
          Logs.meta(state)
        )

        state
    end
  end

  def send_frame(state, _frame), do: state

  @doc "Queues an encoded frame for the port (written in batches: `Symbiont.Host.Out`)."
  @spec emit(State.t(), iodata) :: State.t()
  def emit(state, iodata), do: %{state | out: Out.emit(state.out, iodata)}
end
