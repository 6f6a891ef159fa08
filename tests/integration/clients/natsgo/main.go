// Drives sluiced with the real nats.go client (Debian's package, built in
// GOPATH mode, offline). One scenario per run: natsgo URL NWORKERS SCENARIO.
// Prints "ok SCENARIO" on success; otherwise the failed check, exit 1.
package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
)

var url string
var nworkers uint64

func check(cond bool, format string, args ...interface{}) {
	if !cond {
		fmt.Fprintf(os.Stderr, "FAILED: "+format+"\n", args...)
		os.Exit(1)
	}
}

func must(err error) {
	check(err == nil, "%v", err)
}

func connect(opts ...nats.Option) *nats.Conn {
	// CI machines are busy: do not fail on the 2 s default timeout.
	opts = append(opts, nats.Timeout(10*time.Second))
	nc, err := nats.Connect(url, opts...)
	must(err)
	return nc
}

func workerOf(nc *nats.Conn) uint64 {
	id, err := nc.GetClientID()
	must(err)
	return id % nworkers
}

// connectOn opens connections until one lands on the given worker.
func connectOn(w uint64) *nats.Conn {
	var spare []*nats.Conn
	defer func() {
		for _, s := range spare {
			s.Close()
		}
	}()
	for i := 0; i < 64; i++ {
		nc := connect()
		if workerOf(nc) == w {
			return nc
		}
		spare = append(spare, nc)
	}
	check(false, "no connection landed on worker %d", w)
	return nil
}

func count(sub *nats.Subscription, wait time.Duration) int {
	n := 0
	for {
		if _, err := sub.NextMsg(wait); err != nil {
			return n
		}
		n++
	}
}

func pubsub() {
	a, b := connectOn(0), connectOn(nworkers-1)
	sub, err := a.SubscribeSync("orders.new")
	must(err)
	must(a.Flush())
	for i := 0; i < 1000; i++ {
		must(b.Publish("orders.new", []byte(strconv.Itoa(i))))
	}
	must(b.Flush())
	for i := 0; i < 1000; i++ {
		m, err := sub.NextMsg(5 * time.Second)
		must(err)
		check(string(m.Data) == strconv.Itoa(i), "message %d out of order: %s", i, m.Data)
	}
}

func wildcards() {
	a, b := connectOn(0), connectOn(nworkers-1)
	star, _ := a.SubscribeSync("time.*.east")
	gt, _ := a.SubscribeSync("time.>")
	must(a.Flush())
	for _, s := range []string{"time.us.east", "time.eu.east", "time.us.west", "time.us.east.1", "time"} {
		must(b.Publish(s, []byte("x")))
	}
	must(b.Flush())
	check(count(star, 300*time.Millisecond) == 2, "time.*.east")
	check(count(gt, 50*time.Millisecond) == 4, "time.>")
}

func queueGroups() {
	const members, msgs = 4, 2000
	seen := make(map[string]bool)
	perWorker := make(map[uint64]int)
	var subs []*nats.Subscription
	var workers []uint64
	for i := 0; i < members; i++ {
		nc := connectOn(uint64(i) % nworkers)
		s, err := nc.QueueSubscribeSync("jobs", "pool")
		must(err)
		must(nc.Flush())
		subs = append(subs, s)
		workers = append(workers, workerOf(nc))
	}
	p := connectOn(0)
	for i := 0; i < msgs; i++ {
		must(p.Publish("jobs", []byte(strconv.Itoa(i))))
	}
	must(p.Flush())
	got := 0
	for i, s := range subs {
		for {
			m, err := s.NextMsg(500 * time.Millisecond)
			if err != nil {
				break
			}
			check(!seen[string(m.Data)], "message %s delivered twice", m.Data)
			seen[string(m.Data)] = true
			perWorker[workers[i]]++
			got++
		}
	}
	check(got == msgs, "group got %d of %d", got, msgs)
	for w := uint64(0); w < nworkers; w++ {
		check(perWorker[w] > msgs/10, "worker %d got only %d", w, perWorker[w])
	}
}

func requestReply() {
	srv, cli := connectOn(0), connectOn(nworkers-1)
	_, err := srv.Subscribe("svc.echo", func(m *nats.Msg) { m.Respond(append([]byte("re:"), m.Data...)) })
	must(err)
	must(srv.Flush())
	for i := 0; i < 2000; i++ {
		r, err := cli.Request("svc.echo", []byte(strconv.Itoa(i)), 2*time.Second)
		must(err)
		check(string(r.Data) == "re:"+strconv.Itoa(i), "reply %d: %s", i, r.Data)
	}
}

func noResponders() {
	nc := connect()
	t0 := time.Now()
	_, err := nc.Request("nobody.home", []byte("hi"), 5*time.Second)
	check(err == nats.ErrNoResponders, "got %v", err)
	check(time.Since(t0) < time.Second, "took %v", time.Since(t0))
}

func headers() {
	a, b := connectOn(0), connectOn(nworkers-1)
	sub, _ := a.SubscribeSync("hdr.test")
	must(a.Flush())
	m := nats.NewMsg("hdr.test")
	m.Header.Set("Trace-Id", "abc-123")
	m.Header.Add("Multi", "one")
	m.Header.Add("Multi", "two")
	m.Data = []byte("body")
	must(b.PublishMsg(m))
	must(b.Flush())
	r, err := sub.NextMsg(5 * time.Second)
	must(err)
	check(r.Header.Get("Trace-Id") == "abc-123", "header %v", r.Header)
	check(len(r.Header.Values("Multi")) == 2, "multi %v", r.Header)
	check(string(r.Data) == "body", "body %s", r.Data)
}

func flushRounds() {
	a, b := connectOn(0), connectOn(nworkers-1)
	for i := 0; i < 10000; i++ {
		subj := "round." + strconv.Itoa(i)
		sub, err := a.SubscribeSync(subj)
		must(err)
		must(a.Flush())
		must(b.Publish(subj, []byte("x")))
		_, err = sub.NextMsg(2 * time.Second)
		check(err == nil, "round %d lost its message: %v", i, err)
		must(sub.Unsubscribe())
	}
}

func reconnect() {
	nc := connect(nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	sub, err := nc.SubscribeSync("after.restart")
	must(err)
	must(nc.Flush())
	fmt.Println("ready")
	bufio.NewReader(os.Stdin).ReadString('\n')
	for i := 0; i < 200; i++ {
		nc.Publish("after.restart", []byte("back"))
		nc.FlushTimeout(200 * time.Millisecond)
		if _, err := sub.NextMsg(100 * time.Millisecond); err == nil {
			check(nc.Reconnects >= 1, "did not reconnect")
			return
		}
	}
	check(false, "no message after the restart")
}

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: natsgo URL NWORKERS SCENARIO")
		os.Exit(2)
	}
	url = os.Args[1]
	nworkers, _ = strconv.ParseUint(os.Args[2], 10, 64)
	scenarios := map[string]func(){
		"pubsub": pubsub, "wildcards": wildcards, "queue_groups": queueGroups,
		"request_reply": requestReply, "no_responders": noResponders, "headers": headers,
		"flush_rounds": flushRounds, "reconnect": reconnect,
	}
	fn, ok := scenarios[os.Args[3]]
	check(ok, "unknown scenario %s", os.Args[3])
	fn()
	fmt.Println("ok " + os.Args[3])
}
