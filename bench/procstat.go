package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat. Linux
// fixes it at 100 for user space whatever the kernel's HZ.
const clockTicks = 100

// procStat is the part of /proc/PID/stat the bench reads.
type procStat struct {
	PPID  int
	UTime uint64 // clock ticks
	STime uint64 // clock ticks
}

// CPU returns the process's user plus system CPU time.
func (s procStat) CPU() time.Duration {
	return ticksToDuration(s.UTime + s.STime)
}

func ticksToDuration(ticks uint64) time.Duration {
	return time.Duration(ticks) * (time.Second / clockTicks)
}

// parseStat parses the contents of /proc/PID/stat. The command name (field 2)
// may hold spaces and parentheses, so fields are counted from the last ')'.
func parseStat(data []byte) (procStat, error) {
	end := bytes.LastIndexByte(data, ')')
	if end < 0 {
		return procStat{}, errors.New("parse stat: no command name")
	}
	// After ") " come field 3 (state), 4 (ppid), ... 14 (utime), 15 (stime).
	fields := strings.Fields(string(data[end+1:]))
	if len(fields) < 13 {
		return procStat{}, fmt.Errorf("parse stat: %d fields after command name; want at least 13", len(fields))
	}
	ppid, err := strconv.Atoi(fields[1])
	if err != nil {
		return procStat{}, fmt.Errorf("parse stat ppid: %w", err)
	}
	utime, err := strconv.ParseUint(fields[11], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("parse stat utime: %w", err)
	}
	stime, err := strconv.ParseUint(fields[12], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("parse stat stime: %w", err)
	}
	return procStat{PPID: ppid, UTime: utime, STime: stime}, nil
}

// parseVmRSS returns the VmRSS line of /proc/PID/status in bytes.
func parseVmRSS(data []byte) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("parse VmRSS %q: want \"<n> kB\"", line)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse VmRSS: %w", err)
		}
		return kb * 1024, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("parse VmRSS: %w", err)
	}
	return 0, errors.New("parse VmRSS: no VmRSS line (kernel thread or zombie?)")
}

// readStat reads /proc/PID/stat.
func readStat(pid int) (procStat, error) {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return procStat{}, fmt.Errorf("read stat of %d: %w", pid, err)
	}
	s, err := parseStat(data)
	if err != nil {
		return procStat{}, fmt.Errorf("pid %d: %w", pid, err)
	}
	return s, nil
}

// readRSS reads VmRSS of /proc/PID/status in bytes.
func readRSS(pid int) (int64, error) {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0, fmt.Errorf("read status of %d: %w", pid, err)
	}
	rss, err := parseVmRSS(data)
	if err != nil {
		return 0, fmt.Errorf("pid %d: %w", pid, err)
	}
	return rss, nil
}

// childPIDs returns the direct children of ppid (nginx's workers).
func childPIDs(ppid int) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list /proc: %w", err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		s, err := readStat(pid)
		if err != nil {
			continue // exited while we looked
		}
		if s.PPID == ppid {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// procUsage is the CPU time and resident memory of a process tree at one instant.
type procUsage struct {
	At  time.Time
	CPU time.Duration
	RSS int64
}

// treeUsage sums CPU time and RSS over pid and its direct children, so that
// nginx's master and workers count as one proxy. Go processes have no
// children and count alone.
func treeUsage(pid int) (procUsage, error) {
	u := procUsage{At: time.Now()}
	kids, err := childPIDs(pid)
	if err != nil {
		return procUsage{}, err
	}
	for _, p := range append([]int{pid}, kids...) {
		s, err := readStat(p)
		if err != nil {
			return procUsage{}, err
		}
		rss, err := readRSS(p)
		if err != nil {
			return procUsage{}, err
		}
		u.CPU += s.CPU()
		u.RSS += rss
	}
	return u, nil
}
