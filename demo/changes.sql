-- pg_sluice demo: one school day of changes, applied on the LIVE server
-- after the initial copy. sluice.refresh() then brings them to the datamart.
-- Each step \echo-es one line describing it.

\set ON_ERROR_STOP on
SET client_min_messages = warning;
SET TimeZone = 'UTC';

\echo '  * a new attendance status: ALTER TYPE school.attendance_status ADD VALUE ''remote'''
\echo '      (enums are text in the datamart: nothing to change there)'
ALTER TYPE school.attendance_status ADD VALUE 'remote';

\echo '  * Friday''s attendance for 30 courses is recorded (INSERT, about 2,400 rows)'
INSERT INTO school.attendance (student_id, course_id, class_date, status, minutes_late, recorded_at)
SELECT en.student_id, en.course_id, date '2024-11-01',
       CASE WHEN r < 85 THEN 'present' WHEN r < 90 THEN 'remote' WHEN r < 95 THEN 'late'
            WHEN r < 98 THEN 'absent' ELSE 'excused' END::school.attendance_status,
       CASE WHEN r BETWEEN 90 AND 94 THEN 3 + r % 10 END,
       timestamptz '2024-11-01 08:05:00+00' + (en.course_id % 7) * interval '55 minutes'
  FROM school.enrollments en,
       LATERAL (SELECT (hashtext(en.student_id || ':' || en.course_id || ':fri') & 2147483647) % 100 AS r) h
 WHERE en.course_id <= 30
 ORDER BY en.course_id, en.student_id;

\echo '  * three students are admitted with their six courses each (one transaction, two tables)'
BEGIN;
INSERT INTO school.students (student_id, public_id, first_name, last_name, email, birth_date,
                             year_group, registered_at, guardians, tags)
VALUES (2401, md5('student:2401')::uuid, 'Nadia', 'Haddad', 'nadia.haddad2401@students.riverside.example.edu',
        '2010-03-14', 9, '2024-11-01 09:12:00+00',
        '[{"name": "Samir Haddad", "relation": "father", "phone": "+1-555-0142"}]', '{new_arrival}'),
       (2402, md5('student:2402')::uuid, 'Tom', 'Becker', 'tom.becker2402@students.riverside.example.edu',
        '2011-07-02', 8, '2024-11-01 09:20:00+00',
        '[{"name": "Julia Becker", "relation": "mother", "phone": "+1-555-0877"}]', '{new_arrival,needs_transport}'),
       (2403, md5('student:2403')::uuid, 'Mei', 'Chen', NULL,
        '2009-12-30', 10, '2024-11-01 10:02:00+00',
        '[{"name": "Li Chen", "relation": "mother", "phone": "+1-555-0319", "emergency_contact": true}]', '{new_arrival}');
INSERT INTO school.enrollments
SELECT s, 1 + (s * 7 + k * 53) % 180, date '2024-11-01'
  FROM generate_series(2401, 2403) s, generate_series(0, 5) k;
COMMIT;

\echo '  * the Quiz 1 of course 12 is re-marked: +3 points for everyone (UPDATE), one grade corrected by hand'
UPDATE school.grades g
   SET score = least(100, g.score + 3), graded_at = '2024-11-01 11:30:00+00', comment = 're-marked'
  FROM school.exams x
 WHERE x.exam_id = g.exam_id AND x.course_id = 12 AND x.title = 'Quiz 1';
UPDATE school.grades
   SET score = 91.5, comment = 'corrected: page 3 was not scanned'
 WHERE (exam_id, student_id) = (SELECT exam_id, student_id FROM school.grades ORDER BY exam_id, student_id LIMIT 1 OFFSET 500);

\echo '  * a guardian''s phone number and a student''s clubs change (jsonb and text[] updates)'
UPDATE school.students
   SET guardians = jsonb_set(guardians, '{0,phone}', '"+1-555-0199"')
 WHERE student_id = 314;
UPDATE school.students
   SET tags = array_append(tags, 'robotics')
 WHERE student_id IN (15, 16, 17);

\echo '  * student 1042 gets a new id, 9042 (primary key UPDATE, cascades to enrollments, grades, attendance)'
UPDATE school.students SET student_id = 9042 WHERE student_id = 1042;

\echo '  * student 77 leaves the school (DELETE, cascades to enrollments, grades, attendance)'
DELETE FROM school.students WHERE student_id = 77;

\echo '  * student 5 drops a course: its grades and the enrollment go (one transaction, DELETEs)'
BEGIN;
DELETE FROM school.grades g
 USING school.exams x
 WHERE x.exam_id = g.exam_id AND g.student_id = 5
   AND x.course_id = (SELECT min(course_id) FROM school.enrollments WHERE student_id = 5);
DELETE FROM school.enrollments
 WHERE student_id = 5
   AND course_id = (SELECT min(course_id) FROM school.enrollments WHERE student_id = 5);
COMMIT;

\echo '  * course 12 moves to room Lab-204: a small UPDATE of a row whose 6 kB syllabus is TOASTed'
\echo '      (live does not resend the unchanged syllabus; the datamart keeps its copy)'
UPDATE school.courses SET room = 'Lab-204' WHERE course_id = 12;

\echo '  * the syllabus of course 13 is rewritten (a new TOASTed value)'
UPDATE school.courses
   SET syllabus = syllabus || E'\nWeek 37: revision and mock exam. Bring a calculator.'
 WHERE course_id = 13;

\echo '  * a teacher is hired and takes over two courses (one transaction, two tables)'
BEGIN;
INSERT INTO school.teachers VALUES
    (121, 'Ada Lindqvist', 'ada.lindqvist121@riverside.example.edu', '2024-11-01',
     '{Computer Science,Mathematics}', 51250.00, true);
UPDATE school.courses SET teacher_id = 121 WHERE course_id IN (23, 37);
COMMIT;

\echo '  * the nightly feed is reloaded: TRUNCATE school.sis_import and 250 new rows,'
\echo '      then one row deleted (no primary key: REPLICA IDENTITY FULL matches every column)'
BEGIN;
TRUNCATE school.sis_import;
INSERT INTO school.sis_import
SELECT date '2024-11-01', 'SIS-' || (600000 + i),
       CASE WHEN i % 10 = 0 THEN NULL ELSE 1 + (hashtext(i || ':sis') & 2147483647) % 2400 END,
       jsonb_build_object('kind', (ARRAY['address_change', 'phone_change', 'medical_note', 'transport'])[1 + i % 4],
                          'seq', i, 'verified', i % 3 <> 0),
       CASE WHEN i % 10 = 0 THEN 'unmatched: no student id' END
  FROM generate_series(1, 250) i;
COMMIT;
DELETE FROM school.sis_import WHERE external_ref = 'SIS-600007';

\echo '  * a mistake, rolled back: DELETE FROM school.grades; ROLLBACK (never reaches the datamart)'
BEGIN;
DELETE FROM school.grades;
ROLLBACK;
