package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Scenarios for the queue features RabbitMQ users lean on: dead-lettering
// with x-death, TTL, max-length overflow, priorities, the delayed-message
// exchange, the headers exchange and durable queues across a SIGKILL. Queues
// are declared on one worker and used from a connection on the other
// wherever placement is on, so every feature is exercised across workers.

var featureScenarios = map[string]func(){
	"dlx_x_death":          dlxXDeath,
	"dlx_x_death_time":     dlxXDeathTime,
	"dlx_reject_cycle":     dlxRejectCycle,
	"ttl":                  ttlScenario,
	"max_length":           maxLength,
	"priority":             priorityScenario,
	"delayed_exchange":     delayedExchange,
	"headers_exchange":     headersExchange,
	"durable_load":         durableLoad,
	"durable_verify":       durableVerify,
	"durable_large":        durableLarge,
	"durable_large_verify": durableLargeVerify,
}

// waitFor polls cond until it holds, or fails the scenario after waitMax.
func waitFor(cond func() bool, what string) {
	deadline := time.Now().Add(waitMax)
	for !cond() {
		check(time.Now().Before(deadline), "%s: not within %v", what, waitMax)
		time.Sleep(5 * time.Millisecond)
	}
}

func declareArgs(ch *amqp.Channel, name string, durable bool, args amqp.Table) {
	_, err := ch.QueueDeclare(name, durable, false, false, false, args)
	must(err)
}

func publishWith(ch *amqp.Channel, exchange, key string, p amqp.Publishing) amqp.Confirmation {
	must(ch.Publish(exchange, key, false, false, p))
	acks, ok := confirmed[ch]
	check(ok, "publishWith needs a confirming channel")
	return nextConfirm(acks, "publish to "+exchange+" "+key)
}

func asInt64(v interface{}) (int64, bool) {
	switch n := v.(type) {
	case int64:
		return n, true
	case int32:
		return int64(n), true
	case int16:
		return int64(n), true
	case int8:
		return int64(n), true
	case uint8:
		return int64(n), true
	}
	return 0, false
}

// oneDeath checks the x-death header RabbitMQ writes for a message that died
// once: a single entry with count 1 and the given reason and queue.
func oneDeath(m amqp.Delivery, reason, queue, exchange string, keys []string) {
	deaths, ok := m.Headers["x-death"].([]interface{})
	check(ok && len(deaths) == 1, "x-death %#v", m.Headers["x-death"])
	d, ok := deaths[0].(amqp.Table)
	check(ok, "x-death entry %#v", deaths[0])
	count, ok := asInt64(d["count"])
	check(ok && count == 1, "x-death count %#v", d["count"])
	check(d["reason"] == reason && d["queue"] == queue && d["exchange"] == exchange,
		"x-death reason/queue/exchange %v %v %v, want %s %s %q", d["reason"], d["queue"], d["exchange"],
		reason, queue, exchange)
	rks, ok := d["routing-keys"].([]interface{})
	check(ok && len(rks) == len(keys), "x-death routing-keys %#v", d["routing-keys"])
	for i, k := range keys {
		check(rks[i] == k, "x-death routing-keys %v, want %v", rks, keys)
	}
	// Its value is checked by dlx_x_death_time (a known broker bug).
	_, ok = d["time"].(time.Time)
	check(ok, "x-death time %#v", d["time"])
	check(m.Headers["x-first-death-reason"] == reason && m.Headers["x-first-death-queue"] == queue,
		"x-first-death-* %v %v", m.Headers["x-first-death-reason"], m.Headers["x-first-death-queue"])
}

func getOne(ch *amqp.Channel, queue string) amqp.Delivery {
	m, ok, err := ch.Get(queue, true)
	must(err)
	check(ok, "%s: empty", queue)
	return m
}

// dlxXDeath: messages die by rejection, by TTL expiry and by max-length
// overflow; each reaches the dead-letter exchange's queue with x-death.
func dlxXDeath() {
	owner, user := dial(), dial()
	defer owner.Close()
	defer user.Close()
	och := confirming(channel(owner))
	must(och.ExchangeDeclare("go.dlx", "direct", false, false, false, false, nil))
	dl := amqp.Table{"x-dead-letter-exchange": "go.dlx"}
	declareArgs(och, "go.work", false, dl)
	declareArgs(och, "go.ttl", false, amqp.Table{"x-dead-letter-exchange": "go.dlx", "x-message-ttl": int32(30),
		"x-dead-letter-routing-key": "expired"})
	declareArgs(och, "go.max", false, amqp.Table{"x-dead-letter-exchange": "go.dlx", "x-max-length": int32(1)})
	uch := confirming(channel(user))
	declare(uch, "go.dead") // on the other worker from the queues that die into it
	for _, k := range []string{"go.work", "expired", "go.max"} {
		must(uch.QueueBind("go.dead", k, "go.dlx", false, nil))
	}
	// rejected: consumed and rejected without requeue from the other worker
	publishWith(uch, "", "go.work", amqp.Publishing{Body: []byte("bad"), Headers: amqp.Table{"h": "v"}})
	d, err := uch.Consume("go.work", "rej", false, false, false, false, nil)
	must(err)
	m := next(d, "go.work delivery")
	check(string(m.Body) == "bad", "go.work delivered %q", m.Body)
	must(m.Reject(false))
	must(uch.Cancel("rej", false))
	waitFor(func() bool { return ready(uch, "go.dead") == 1 }, "rejected message dead-lettered")
	m = getOne(uch, "go.dead")
	check(string(m.Body) == "bad" && m.Exchange == "go.dlx" && m.RoutingKey == "go.work" &&
		m.Headers["h"] == "v", "rejected copy %q via %q %q headers %v", m.Body, m.Exchange, m.RoutingKey, m.Headers)
	oneDeath(m, "rejected", "go.work", "", []string{"go.work"})
	// expired: the dead-letter routing key replaces the original one
	publishWith(uch, "", "go.ttl", amqp.Publishing{Body: []byte("old")})
	waitFor(func() bool { return ready(uch, "go.dead") == 1 }, "expired message dead-lettered")
	m = getOne(uch, "go.dead")
	check(string(m.Body) == "old" && m.RoutingKey == "expired", "expired copy %q key %q", m.Body, m.RoutingKey)
	oneDeath(m, "expired", "go.ttl", "", []string{"go.ttl"})
	check(ready(och, "go.ttl") == 0, "go.ttl still holds the expired message")
	// maxlen: drop-head pushes the oldest out when the second arrives
	publishWith(uch, "", "go.max", amqp.Publishing{Body: []byte("first")})
	publishWith(uch, "", "go.max", amqp.Publishing{Body: []byte("second")})
	waitFor(func() bool { return ready(uch, "go.dead") == 1 }, "overflowed message dead-lettered")
	m = getOne(uch, "go.dead")
	check(string(m.Body) == "first", "maxlen copy %q", m.Body)
	oneDeath(m, "maxlen", "go.max", "", []string{"go.max"})
	b, ok := getBody(och, "go.max")
	check(ok && b == "second", "go.max kept %q", b)
}

// dlxXDeathTime: x-death's time is the wall-clock time of the death, a
// timestamp in Unix seconds as RabbitMQ writes it.
func dlxXDeathTime() {
	c := dial()
	defer c.Close()
	ch := confirming(channel(c))
	declare(ch, "go.dead.t")
	declareArgs(ch, "go.work.t", false, amqp.Table{"x-dead-letter-exchange": "",
		"x-dead-letter-routing-key": "go.dead.t"})
	publishWith(ch, "", "go.work.t", amqp.Publishing{Body: []byte("bad")})
	m, ok, err := ch.Get("go.work.t", false)
	must(err)
	check(ok, "go.work.t empty")
	must(m.Reject(false))
	waitFor(func() bool { return ready(ch, "go.dead.t") == 1 }, "rejected message dead-lettered")
	m = getOne(ch, "go.dead.t")
	deaths, _ := m.Headers["x-death"].([]interface{})
	check(len(deaths) == 1, "x-death %#v", m.Headers["x-death"])
	when, _ := deaths[0].(amqp.Table)["time"].(time.Time)
	check(time.Since(when) < time.Hour && time.Until(when) < time.Minute,
		"x-death time %v is not the time of death (now %v)", when, time.Now())
}

// dlxRejectCycle: two queues dead-lettering into each other, every death a
// rejection (so not a cycle the broker drops): x-death keeps one entry per
// queue and reason, most recent first, counting the deaths.
func dlxRejectCycle() {
	owner, user := dial(), dial()
	defer owner.Close()
	defer user.Close()
	och := confirming(channel(owner))
	declareArgs(och, "go.ping", false, amqp.Table{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "go.pong"})
	uch := confirming(channel(user))
	declareArgs(uch, "go.pong", false, amqp.Table{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "go.ping"})
	publishWith(uch, "", "go.ping", amqp.Publishing{Body: []byte("ball")})
	var m amqp.Delivery
	// two rounds: rejected in ping, pong, ping, pong, then back in ping
	for i, q := range []string{"go.ping", "go.pong", "go.ping", "go.pong", "go.ping"} {
		waitFor(func() bool {
			var ok bool
			var err error
			m, ok, err = uch.Get(q, false)
			must(err)
			return ok
		}, "the message in "+q)
		if i < 4 {
			must(m.Reject(false))
		}
	}
	deaths, ok := m.Headers["x-death"].([]interface{})
	check(ok && len(deaths) == 2, "x-death after two rounds %#v", m.Headers["x-death"])
	for i, want := range []string{"go.pong", "go.ping"} {
		d := deaths[i].(amqp.Table)
		count, _ := asInt64(d["count"])
		check(d["queue"] == want && d["reason"] == "rejected" && count == 2,
			"x-death[%d] = %v (want queue %s, rejected, count 2)", i, d, want)
	}
	check(m.Headers["x-first-death-queue"] == "go.ping", "x-first-death-queue %v", m.Headers["x-first-death-queue"])
	must(m.Ack(false))
}

// ttlScenario: per-queue and per-message TTL; an expired message is never
// delivered, not even to a consumer that was waiting all along.
func ttlScenario() {
	owner, user := dial(), dial()
	defer owner.Close()
	defer user.Close()
	och := channel(owner)
	// long enough that a loaded machine still sees the message before it
	// expires (the check that it was queued at all)
	declareArgs(och, "go.qttl", false, amqp.Table{"x-message-ttl": int32(800)})
	declare(och, "go.mttl")
	uch := confirming(channel(user))
	publishWith(uch, "", "go.qttl", amqp.Publishing{Body: []byte("short-lived")})
	check(ready(uch, "go.qttl") == 1, "queue TTL message not there before it expires")
	waitFor(func() bool { return ready(uch, "go.qttl") == 0 }, "queue TTL expiry")
	_, ok := getBody(uch, "go.qttl")
	check(!ok, "expired message delivered by basic.get")
	publishWith(uch, "", "go.mttl", amqp.Publishing{Body: []byte("expires"), Expiration: "50"})
	publishWith(uch, "", "go.mttl", amqp.Publishing{Body: []byte("stays"), Expiration: "60000"})
	publishWith(uch, "", "go.mttl", amqp.Publishing{Body: []byte("forever")})
	waitFor(func() bool { return ready(uch, "go.mttl") == 2 }, "per-message TTL expiry")
	b, ok := getBody(uch, "go.mttl")
	check(ok && b == "stays", "first after expiry %q", b)
	b, ok = getBody(uch, "go.mttl")
	check(ok && b == "forever", "second after expiry %q", b)
	// An already-expired message (expiration 0) is not delivered either.
	publishWith(uch, "", "go.mttl", amqp.Publishing{Body: []byte("dead on arrival"), Expiration: "0"})
	waitFor(func() bool { return ready(uch, "go.mttl") == 0 }, "expiration 0")
}

// maxLength: x-max-length with drop-head keeps the newest; with
// reject-publish the overflowing publish is nacked and the queue unchanged.
func maxLength() {
	owner, user := dial(), dial()
	defer owner.Close()
	defer user.Close()
	och := channel(owner)
	declareArgs(och, "go.drop", false, amqp.Table{"x-max-length": int32(2), "x-overflow": "drop-head"})
	declareArgs(och, "go.rej", false, amqp.Table{"x-max-length": int64(2), "x-overflow": "reject-publish"})
	uch := confirming(channel(user))
	for i := 0; i < 5; i++ {
		cf := publishWith(uch, "", "go.drop", amqp.Publishing{Body: []byte(strconv.Itoa(i))})
		check(cf.Ack, "drop-head publish %d nacked", i)
	}
	check(ready(uch, "go.drop") == 2, "go.drop holds %d", ready(uch, "go.drop"))
	for _, want := range []string{"3", "4"} {
		b, ok := getBody(uch, "go.drop")
		check(ok && b == want, "drop-head kept %q, want %q", b, want)
	}
	for i, wantAck := range []bool{true, true, false, false} {
		cf := publishWith(uch, "", "go.rej", amqp.Publishing{Body: []byte(strconv.Itoa(i))})
		check(cf.Ack == wantAck, "reject-publish confirm %d: ack %v, want %v", i, cf.Ack, wantAck)
	}
	check(ready(uch, "go.rej") == 2, "go.rej holds %d", ready(uch, "go.rej"))
	b, ok := getBody(uch, "go.rej")
	check(ok && b == "0", "reject-publish kept %q first", b)
	// room again: the next publish is accepted
	cf := publishWith(uch, "", "go.rej", amqp.Publishing{Body: []byte("room")})
	check(cf.Ack, "publish after room was made nacked")
}

// priorityScenario: highest priority first, publish order within a level,
// priorities above x-max-priority count as the maximum, no priority as 0.
func priorityScenario() {
	owner, user := dial(), dial()
	defer owner.Close()
	defer user.Close()
	och := channel(owner)
	declareArgs(och, "go.prio", false, amqp.Table{"x-max-priority": int32(5)})
	uch := confirming(channel(user))
	for _, p := range []struct {
		body string
		prio uint8
	}{{"low1", 1}, {"none", 0}, {"high", 5}, {"low2", 1}, {"over", 9}, {"mid", 3}} {
		publishWith(uch, "", "go.prio", amqp.Publishing{Body: []byte(p.body), Priority: p.prio})
	}
	d, err := uch.Consume("go.prio", "", false, false, false, false, nil)
	must(err)
	for _, want := range []string{"high", "over", "mid", "low1", "low2", "none"} {
		m := next(d, "priority delivery")
		check(string(m.Body) == want, "priority order: got %q, want %q", m.Body, want)
		must(m.Ack(false))
	}
}

// delayedExchange: an x-delayed-message exchange holds each message for its
// x-delay and then routes it by its x-delayed-type.
func delayedExchange() {
	owner, user := dial(), dial()
	defer owner.Close()
	defer user.Close()
	och := channel(owner)
	must(och.ExchangeDeclare("go.delay", "x-delayed-message", true, false, false, false,
		amqp.Table{"x-delayed-type": "direct"}))
	declare(och, "go.delayed")
	must(och.QueueBind("go.delayed", "k", "go.delay", false, nil))
	uch := confirming(channel(user))
	start := time.Now()
	publishWith(uch, "go.delay", "k", amqp.Publishing{Body: []byte("late"), Headers: amqp.Table{"x-delay": int32(900)}})
	publishWith(uch, "go.delay", "k", amqp.Publishing{Body: []byte("early"), Headers: amqp.Table{"x-delay": int64(400)}})
	publishWith(uch, "go.delay", "k", amqp.Publishing{Body: []byte("now")})
	publishWith(uch, "go.delay", "other", amqp.Publishing{Body: []byte("unrouted"), Headers: amqp.Table{"x-delay": int32(10)}})
	check(ready(uch, "go.delayed") == 1, "only the undelayed message is routed at once")
	d, err := uch.Consume("go.delayed", "", true, false, false, false, nil)
	must(err)
	for _, want := range []struct {
		body string
		min  time.Duration
	}{{"now", 0}, {"early", 400 * time.Millisecond}, {"late", 900 * time.Millisecond}} {
		m := next(d, "delayed delivery")
		check(string(m.Body) == want.body, "delayed order: got %q, want %q", m.Body, want.body)
		check(time.Since(start) >= want.min, "%q arrived after %v, before its delay", m.Body, time.Since(start))
	}
	// a different type on redeclare is refused
	errs := och.NotifyClose(make(chan *amqp.Error, 1))
	err = och.ExchangeDeclare("go.delay", "direct", true, false, false, false, nil)
	check(err != nil, "redeclaring the delayed exchange as direct succeeded")
	wantError(errs, 406, "redeclare with another type")
}

// headersExchange: x-match all / any (and -with-x) across workers.
func headersExchange() {
	owner, user := dial(), dial()
	defer owner.Close()
	defer user.Close()
	och := channel(owner)
	must(och.ExchangeDeclare("go.hdr", "headers", false, false, false, false, nil))
	declare(och, "go.hall")
	uch := confirming(channel(user))
	declare(uch, "go.hany")
	declare(uch, "go.hx")
	must(och.QueueBind("go.hall", "", "go.hdr", false, amqp.Table{"x-match": "all", "format": "pdf", "size": int32(3)}))
	must(och.QueueBind("go.hany", "", "go.hdr", false, amqp.Table{"x-match": "any", "format": "pdf", "type": "report"}))
	must(och.QueueBind("go.hx", "", "go.hdr", false, amqp.Table{"x-match": "any-with-x", "x-tenant": "a"}))
	for _, p := range []struct {
		body    string
		headers amqp.Table
	}{
		{"both", amqp.Table{"format": "pdf", "size": int32(3)}},
		{"any-only", amqp.Table{"type": "report", "size": int32(4)}},
		{"none", amqp.Table{"format": "zip"}},
		{"x", amqp.Table{"x-tenant": "a"}},
		{"no-headers", nil},
	} {
		publishWith(uch, "go.hdr", "ignored", amqp.Publishing{Body: []byte(p.body), Headers: p.headers})
	}
	bodies := func(q string) string {
		var out []string
		for {
			b, ok := getBody(uch, q)
			if !ok {
				return strings.Join(out, ",")
			}
			out = append(out, b)
		}
	}
	check(bodies("go.hall") == "both", "x-match all got %q", bodies("go.hall"))
	check(bodies("go.hany") == "both,any-only", "x-match any got %q", bodies("go.hany"))
	check(bodies("go.hx") == "x", "x-match any-with-x got %q", bodies("go.hx"))
	// Unbinding is not checked here: amqp091-go encodes a Table in Go's
	// random map order, and sluiced matches binding arguments byte for byte
	// (test_headers_unbind_with_reordered_arguments, xfail), so an unbind
	// with the binding's own arguments misses the binding at random.
}

// The durable scenario runs in two halves around a SIGKILL that the pytest
// driver delivers. durable_load publishes persistent messages with confirms
// into a durable queue (on the other worker) and consumes them, holding the
// first heldMax deliveries unacked ("h ID") and acking the rest up to
// consumeMax (so that the kill also finds a backlog), logging every confirm
// ("c ID") and every ack ("a ID") to the file ARG, until the broker dies
// under it. durable_verify (after the restart) drains the queue and checks
// it against that log.
const (
	durableQueue = "go.durable"
	heldMax      = 16
	consumeMax   = 1000 // then the queue builds a backlog until the kill
)

func durableLoad() {
	check(scenarioArg != "", "durable_load needs a log file argument")
	logf, err := os.Create(scenarioArg)
	must(err)
	defer logf.Close()
	owner, user := dial(), dial()
	och := channel(owner)
	declareArgs(och, durableQueue, true, nil)
	pch := channel(user)
	must(pch.Confirm(false))
	acks := pch.NotifyPublish(make(chan amqp.Confirmation, 256))
	cch := channel(owner)
	must(cch.Qos(64, 0, false))
	d, err := cch.Consume(durableQueue, "load", false, false, false, false, nil)
	must(err)
	// the broker's death ends everything below: exit cleanly, log flushed
	dead := user.NotifyClose(make(chan *amqp.Error, 1))
	fmt.Fprintf(logf, "start\n")
	const window = 64
	published, confirmedN, held, delivered := 0, 0, 0, 0
	for {
		for published-confirmedN < window {
			err := pch.Publish("", durableQueue, false, false, amqp.Publishing{
				DeliveryMode: amqp.Persistent, Body: []byte(strconv.Itoa(published))})
			if err != nil {
				return
			}
			published++
		}
		select {
		case cf, ok := <-acks:
			if !ok {
				return
			}
			check(cf.Ack, "persistent publish %d nacked", cf.DeliveryTag)
			fmt.Fprintf(logf, "c %d\n", cf.DeliveryTag-1)
			confirmedN++
		case m, ok := <-d:
			if !ok { // cancelled, everything it had delivered handled
				d = nil
				break
			}
			if delivered++; delivered == consumeMax {
				if cch.Cancel("load", false) != nil {
					return
				}
			}
			id, err := strconv.Atoi(string(m.Body))
			must(err)
			if held < heldMax {
				held++
				fmt.Fprintf(logf, "h %d\n", id)
				break
			}
			// Logged before it is sent: an ack that never reached the
			// broker only makes verify allow a message it will see anyway.
			fmt.Fprintf(logf, "a %d\n", id)
			if m.Ack(false) != nil {
				return
			}
		case <-dead:
			return
		case <-time.After(waitMax):
			check(false, "no confirm or delivery within %v", waitMax)
		}
	}
}

func durableVerify() {
	logf, err := os.Open(scenarioArg)
	must(err)
	confirmedIDs, ackedIDs, heldIDs := map[int]bool{}, map[int]bool{}, map[int]bool{}
	maxConfirmed := -1
	sc := bufio.NewScanner(logf)
	for sc.Scan() {
		var kind string
		var id int
		if n, _ := fmt.Sscanf(sc.Text(), "%s %d", &kind, &id); n != 2 {
			continue
		}
		if kind == "c" {
			confirmedIDs[id] = true
			if id > maxConfirmed {
				maxConfirmed = id
			}
		} else if kind == "a" {
			ackedIDs[id] = true
		} else {
			heldIDs[id] = true
		}
	}
	logf.Close()
	check(len(confirmedIDs) > 0 && len(heldIDs) == heldMax && len(ackedIDs) > 0,
		"the load phase logged %d confirms, %d held, %d acked", len(confirmedIDs), len(heldIDs), len(ackedIDs))
	c := dial()
	defer c.Close()
	ch := channel(c)
	q, err := ch.QueueDeclarePassive(durableQueue, true, false, false, false, nil)
	must(err)
	d, err := ch.Consume(durableQueue, "", false, false, false, false, nil)
	must(err)
	seen, ackedBack := map[int]bool{}, 0
	for i := 0; i < q.Messages; i++ {
		m := next(d, "recovered delivery")
		id, err := strconv.Atoi(string(m.Body))
		must(err)
		check(!seen[id], "message %d delivered twice after the restart", id)
		seen[id] = true
		// Only the window in flight at the kill may be there unconfirmed.
		check(id <= maxConfirmed+64, "message %d was never published", id)
		check(!ackedIDs[id] || m.Redelivered, "acknowledged message %d came back not marked redelivered", id)
		check(!heldIDs[id] || m.Redelivered, "delivered unacked message %d came back not marked redelivered", id)
		if ackedIDs[id] {
			ackedBack++
		}
		must(m.Ack(false))
	}
	for id := range confirmedIDs {
		check(seen[id] || ackedIDs[id], "confirmed message %d lost (queue held %d, %d confirmed, %d acked)",
			id, q.Messages, len(confirmedIDs), len(ackedIDs))
	}
	check(ready(ch, durableQueue) == 0, "more messages than the declare-ok counted")
	fmt.Printf("recovered %d messages: %d confirmed, %d acked before the kill (%d of them back), %d held unacked\n",
		len(seen), len(confirmedIDs), len(ackedIDs), ackedBack, len(heldIDs))
}

// Persistent messages over the broker's 2 MiB storage batch (stored in
// pieces): durable_large publishes them with confirms from the other
// worker, consumes and acks the first, publishes a marker; the driver
// SIGKILLs the broker; durable_large_verify checks that every other one comes
// back exactly once, redelivered and byte for byte.
const largeQueue = "go.durable.large"

var largeSizes = []int{5 << 20, 20 << 20, 3<<20 + 7}

// largeBody is message i's content: a xorshift stream seeded by i, so the
// verifying run can rebuild it.
func largeBody(i, size int) []byte {
	b := make([]byte, size)
	x := uint64(i)*0x9E3779B97F4A7C15 + 1
	for j := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[j] = byte(x)
	}
	return b
}

func durableLarge() {
	owner, user := dial(), dial()
	och := channel(owner)
	declareArgs(och, largeQueue, true, nil)
	pch := confirming(channel(user))
	for i, size := range largeSizes {
		cf := publishWith(pch, "", largeQueue, amqp.Publishing{
			DeliveryMode: amqp.Persistent, Body: largeBody(i, size)})
		check(cf.Ack, "large persistent publish %d nacked", i)
	}
	m, ok, err := och.Get(largeQueue, false)
	must(err)
	check(ok && string(m.Body) == string(largeBody(0, largeSizes[0])), "first large message")
	must(m.Ack(false))
	// its ack record precedes this message in the log: durable with its confirm
	cf := publishWith(pch, "", largeQueue, amqp.Publishing{
		DeliveryMode: amqp.Persistent, Body: []byte("marker")})
	check(cf.Ack, "marker nacked")
}

func durableLargeVerify() {
	ch := channel(dial())
	q, err := ch.QueueDeclarePassive(largeQueue, true, false, false, false, nil)
	must(err)
	check(q.Messages == len(largeSizes), "%d messages back, want %d", q.Messages, len(largeSizes))
	for i := 1; i <= len(largeSizes); i++ {
		m, ok, err := ch.Get(largeQueue, false)
		must(err)
		check(ok, "message %d missing", i)
		check(m.Redelivered, "message %d not marked redelivered", i)
		if i < len(largeSizes) {
			check(string(m.Body) == string(largeBody(i, largeSizes[i])),
				"message %d: %d bytes, not what was published", i, len(m.Body))
		} else {
			check(string(m.Body) == "marker", "last message %q", m.Body)
		}
		must(m.Ack(false))
	}
	_, ok, err := ch.Get(largeQueue, false)
	must(err)
	check(!ok, "a message came back twice")
}
