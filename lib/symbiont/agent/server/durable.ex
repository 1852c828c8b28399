defmodule Symbiont.Agent.Server.Durable do
  @moduledoc """
  The journal of a durable agent (`Symbiont.Journal`) as its server uses it: opened and
  restored when it starts, each event journaled as it is accepted and each ack with its
  checkpoint, the group commit, and a journal the disk refuses (events held, then refused,
  and the journal tried again; see `docs/DURABILITY.md` §6).
  """

  import Symbiont.Agent.Server.State

  require Logger

  alias Symbiont.Journal
  alias Symbiont.Agent.{Dedupe, Delivery}
  alias Symbiont.Agent.Server.{Deliveries, Health, Introspection, Link}
  alias Symbiont.Host.Out

  # A durable agent commits its journal at least every this many records.
  @journal_batch 64
  # A journal the disk refused is tried again after 1 s, then 2 s, 4 s, and every 5 s.
  @journal_retry_ms 1_000
  @journal_retry_max_ms 5_000

  ## The journal of a durable agent (Symbiont.Journal)

  # Where a journal goes: a placed agent's is the agent's, wherever it runs. One that
  # cannot be opened (unreadable, corrupt) leaves the agent running without a state, not
  # attached to its host, refusing events, trying again (retry_journal/1).
  @doc false
  def open_journal(%{spec: spec} = state) do
    if Map.get(spec, :durable, false) do
      path = Journal.path(state.id, Map.get(spec, :nodes) != nil)

      case Journal.open(path) do
        {:ok, journal, restored} ->
          {:ok, restore(%{state | journal: journal}, restored)}

        {:error, reason} ->
          {:error, reason, %{state | journal: Journal.unopened(path, reason)}}
      end
    else
      {:ok, state}
    end
  end

  # The last journaled checkpoint, and the events not finished, in the order accepted,
  # each with its seq. A new journal gets a first checkpoint at once: the incarnation
  # that goes with the seqs it numbers.
  defp restore(state, %{checkpoint: nil, pending: []}), do: first_checkpoint(state)

  defp restore(state, %{checkpoint: checkpoint, pending: pending, next: next}) do
    state =
      if checkpoint,
        do: restore_checkpoint(state, checkpoint),
        else: first_checkpoint(state)

    n = length(pending)

    delivery =
      Delivery.append(Delivery.seen_seq(state.delivery, next - 1), Enum.map(pending, &{&1, 0}))

    state = Deliveries.put_delivery(state, delivery)
    # Accepted after the checkpoint's dedupe memory was taken: their ids join it.
    dedupe = state.dedupe && Enum.reduce(pending, state.dedupe, &Dedupe.remember(&2, &1.id))
    state = %{state | dedupe: dedupe}

    Logger.info(
      "agent #{state.id} resumed from its journal: #{n} events pending#{if checkpoint, do: ", state restored", else: ""}",
      meta(state)
    )

    state
  end

  # What the journal keeps with each ack: the state the host acked with it and the seq it
  # matches, the incarnation of the seqs (so that a restored agent's publishes have the
  # ids they had before: PROTOCOL.md §8.1), and a `dedupe: true` agent's memory of the
  # event ids it has accepted (so that it drops the same duplicates).
  defp checkpoint(state) do
    %{
      state: state.state_bin,
      seq: state.acked_seq,
      incarnation: state.intake.incarnation,
      dedupe: state.dedupe
    }
  end

  defp restore_checkpoint(state, checkpoint) do
    %{
      state
      | state_bin: checkpoint.state,
        acked_seq: Map.get(checkpoint, :seq, 0),
        delivery: Delivery.seen_seq(state.delivery, Map.get(checkpoint, :seq, 0)),
        dedupe: if(state.dedupe, do: Map.get(checkpoint, :dedupe) || state.dedupe)
    }
    |> set(:intake, incarnation: Map.get(checkpoint, :incarnation, state.intake.incarnation))
  end

  defp first_checkpoint(state) do
    journal = Journal.checkpoint(state.journal, checkpoint(state))
    commit(%{state | journal: journal})
  end

  @doc false
  def journal_accept(%{journal: nil} = state, event), do: {event, state}

  def journal_accept(state, event) do
    {event, journal} = Journal.accept(state.journal, event)
    {event, %{state | journal: journal}}
  end

  # Events the agent is finished with: handled, given up, or handed to another.
  @doc false
  def journal_done(%{journal: nil} = state, _whats), do: state
  def journal_done(state, whats), do: %{state | journal: Journal.done(state.journal, whats)}

  @doc false
  def journal_ack(%{journal: nil} = state, _acked), do: state

  def journal_ack(state, acked) do
    journal =
      state.journal
      |> Journal.done(Enum.map(acked, &elem(&1, 1)))
      |> Journal.checkpoint(checkpoint(state))

    %{state | journal: journal}
  end

  # Group commit: once nothing more waits in the mailbox, after @journal_batch records,
  # or before the frames waiting are written (Out.due?/1); always before the owner's
  # frames reach the host, so the host never sees an event that is not on disk yet.
  @doc false
  def maybe_commit(%{journal: nil} = state), do: state

  def maybe_commit(state) do
    cond do
      not Journal.dirty?(state.journal) -> state
      Journal.batched(state.journal) >= @journal_batch -> commit(state)
      Out.due?(state.out) -> commit(state)
      Process.info(self(), :message_queue_len) == {:message_queue_len, 0} -> commit(state)
      true -> state
    end
  end

  @doc false
  def commit(%{journal: nil} = state), do: state
  # Unavailable: the retry timer writes it again (retry_journal/1).
  def commit(%{journal: %Journal{error: error}} = state) when error != nil, do: state

  def commit(state) do
    case Journal.commit(state.journal, fn -> journaled(state) end) do
      {:ok, journal} -> %{state | journal: journal}
      {:error, reason, journal} -> journal_failed(%{state | journal: journal}, reason)
    end
  end

  # The events of the journal still pending, in the order accepted (for a compaction, or
  # to write the journal anew): in flight, waiting, and held.
  defp journaled(state) do
    held = for {%Symbiont.Event{} = e, _} <- state.intake.held, do: e
    Enum.sort_by(Delivery.events(state.delivery) ++ held, & &1.seq)
  end

  ## A journal the disk refuses (see "When the disk refuses" in Symbiont.Journal)

  # The journal could not be written (or opened): the agent stops accepting events
  # (checked publishes on this node are refused, the others dead-lettered), says so on
  # symbiont.health, and tries again later. The events whose journal record did not
  # reach the disk are held back: not accepted, never shown to the host, and written
  # with the rest when the journal is written again. What was on disk already is served
  # as before (its acks wait in memory for the journal).
  @doc false
  def journal_failed(state, reason) do
    :atomics.put(state.intake.load, 2, 1)

    state
    |> hold_undurable()
    |> report_journal(reason)
    |> set(:intake, journal_retry: 0)
    |> schedule_journal_retry()
  end

  defp report_journal(state, reason) do
    message = Journal.format_error(reason)

    Logger.error(
      "agent #{state.id}: #{message}; it accepts no events until its journal works again",
      meta(state)
    )

    metrics = %{"queue" => state.delivery.queued, "held" => length(state.intake.held)}
    state |> Health.set_signal(:journal, {"failing", message, metrics}) |> Introspection.observe()
  end

  # The deliveries and waiting events whose journal record is not on disk move to the
  # held ones; their frames, not yet written to the host (the journal is committed before
  # every write), are taken out of the batch.
  defp hold_undurable(state) do
    durable = state.journal.durable
    {gone, waiting, frames, delivery} = Delivery.take_events(state.delivery, &(&1.seq > durable))
    held = Enum.sort_by(state.intake.held ++ gone ++ waiting, &elem(&1, 0).seq)

    %{state | out: Out.drop(state.out, MapSet.new(frames))}
    |> Deliveries.put_delivery(delivery)
    |> set(:intake, held: held)
  end

  defp schedule_journal_retry(state) do
    n = state.intake.journal_retry + 1
    delay = min(@journal_retry_max_ms, @journal_retry_ms * Integer.pow(2, min(n - 1, 10)))
    Process.send_after(self(), {:journal_retry, n}, delay)
    set(state, :intake, journal_retry: n)
  end

  # Opens the journal that could not be opened, or writes anew (from memory: the state
  # now, and every event it holds) the one that could not be written. A new reason is
  # reported; the same one again is not.
  @doc false
  def retry_journal(%{journal: old} = state) do
    if Journal.opened?(old) do
      case Journal.recover(old, checkpoint(state), journaled(state)) do
        {:ok, journal} -> journal_back(%{state | journal: journal})
        {:error, reason, journal} -> retry_later(%{state | journal: journal}, reason, old)
      end
    else
      case open_journal(state) do
        # Opened, and its first write (a new journal's checkpoint) done or already
        # reported (journal_failed/2).
        {:ok, state} ->
          state = if Journal.available?(state.journal), do: journal_back(state), else: state
          Link.attach(state)

        {:error, reason, state} ->
          retry_later(state, reason, old)
      end
    end
  end

  defp retry_later(state, reason, old) do
    state = if reason != Journal.error(old), do: report_journal(state, reason), else: state
    schedule_journal_retry(state)
  end

  # Written again: the held events are accepted now (they were written with the rest) and
  # go back to the queue, after those that waited there; events are accepted again.
  defp journal_back(state) do
    :atomics.put(state.intake.load, 2, 0)
    held = state.intake.held
    message = "the journal #{state.journal.path} works again"

    Logger.warning(
      "agent #{state.id}: #{message}; it accepts events again (#{length(held)} held meanwhile)",
      meta(state)
    )

    %{state | overloaded: false}
    |> Deliveries.put_delivery(Delivery.append(state.delivery, held))
    |> set(:intake, held: [], journal_retry: 0)
    |> Health.set_signal(:load, nil, message)
    |> Health.set_signal(:journal, nil, message)
    |> Introspection.observe()
    |> Deliveries.drain()
  end
end
